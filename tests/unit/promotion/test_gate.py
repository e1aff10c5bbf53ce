"""`plumbline gate`: absolute thresholds from params.yaml, and no regression beyond tolerance
against the champion re-scored on today's test split. Crafted metrics for the rules; real
small models and a temporary SQLite registry for the command.
"""

from __future__ import annotations

from support.paths import REPO

from plumbline.monitoring.settings import load_params
from plumbline.promotion.gate import ChampionScore, decide
from plumbline.promotion.settings import GateConfig

# reports/metrics.json of the default model on the full data (see the commit that chose it).
DEFAULT_MODEL = {"roc_auc": 0.748403, "pr_auc": 0.527354, "brier": 0.190549, "rows": 8235.0}


def test_default_thresholds_pass_the_default_model() -> None:
    cfg = load_params(REPO / "params.yaml").gate
    result = decide(DEFAULT_MODEL, cfg, None, "m")
    assert result.passed, result.reasons
    assert "absolute thresholds only" in result.note


def test_crafted_metrics_fail_with_one_reason_per_failed_check() -> None:
    cfg = GateConfig(min_roc_auc=0.70, min_pr_auc=0.45, max_brier=0.21)

    result = decide({"roc_auc": 0.62, "pr_auc": 0.50, "brier": 0.26}, cfg, None, "m")

    assert not result.passed
    assert result.reasons == [
        "roc_auc 0.6200 is below gate.min_roc_auc 0.7000",
        "brier 0.2600 is above gate.max_brier 0.2100",
    ]
    assert [c.passed for c in result.checks] == [False, True, False]
    missing = decide({"roc_auc": 0.8, "brier": 0.1}, cfg, None, "m")
    assert missing.reasons == ["pr_auc is missing from reports/metrics.json"]


def test_regression_beyond_tolerance_fails_even_when_thresholds_pass() -> None:
    cfg = GateConfig(min_roc_auc=0.70, min_pr_auc=0.45, max_brier=0.21, max_regression=0.01)
    champion = ChampionScore("7", {"roc_auc": 0.80, "pr_auc": 0.60, "brier": 0.170}, rows=100)
    candidate = {"roc_auc": 0.76, "pr_auc": 0.595, "brier": 0.175, "rows": 100}

    result = decide(candidate, cfg, champion, "m")

    assert all(c.passed for c in result.checks if not c.name.startswith("champion_"))
    assert not result.passed
    assert result.reasons == [
        "roc_auc 0.7600 is 0.0400 worse than champion version 7 (0.8000 on the same test "
        "split); gate.max_regression allows 0.0100"
    ]
    within = GateConfig(**{**cfg.model_dump(), "max_regression": 0.05})
    assert decide(candidate, within, champion, "m").passed


# --- the command ---------------------------------------------------------------------------
