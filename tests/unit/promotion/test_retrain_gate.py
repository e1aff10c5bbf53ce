"""The retrain gate (plumbline.promotion.retrain_gate) on synthetic drifted data: the challenger
and the
champion scored on the same new rows, compared with a paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from support.paths import REPO

from plumbline.monitoring.settings import load_params
from plumbline.promotion.gate import decide as offline_decide
from plumbline.promotion.retrain_gate import decide, paired_bootstrap
from plumbline.promotion.settings import GateConfig, RetrainComparisonConfig

FLOORS = GateConfig(min_roc_auc=0.55, min_pr_auc=0.0, max_brier=0.35, max_regression=0.01)
CFG = RetrainComparisonConfig()


def drifted(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New-period rows: the outcome now depends on x2 as much as on x1 (it did not before).

    Returns the outcomes, the features and the true probabilities."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=[1.0, 0.5], scale=1.0, size=(rows, 2))
    logit = -0.5 + 1.0 * x[:, 0] + 1.0 * x[:, 1]
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(rows) < p).astype(np.int64)
    return y, x, p


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-z)))


def verdict(y: np.ndarray, new: np.ndarray, old: np.ndarray) -> object:
    metrics = {
        "roc_auc": float(roc_auc_score(y, new)),
        "pr_auc": float(average_precision_score(y, new)),
        "brier": float(brier_score_loss(y, new)),
        "rows": float(len(y)),
    }
    return decide(metrics, FLOORS, CFG, "m", (y, new, old, "1"))


def test_the_bootstrap_difference_is_the_metric_difference_with_an_interval_around_it() -> None:
    y, x, _ = drifted(600, 0)
    new, old = sigmoid(x[:, 0] + x[:, 1] - 0.5), sigmoid(x[:, 0] - 1.0)
    d = paired_bootstrap("roc_auc", y, new, old, 500, 0.9, 0)
    assert d.challenger == pytest.approx(roc_auc_score(y, new), abs=1e-12)
    assert d.champion == pytest.approx(roc_auc_score(y, old), abs=1e-12)
    assert d.improvement == pytest.approx(d.challenger - d.champion)
    assert d.low < d.improvement < d.high
    brier = paired_bootstrap("brier", y, new, old, 500, 0.9, 0)
    # Lower Brier is better: the improvement is champion minus challenger.
    assert brier.improvement == pytest.approx(
        brier_score_loss(y, old) - brier_score_loss(y, new), abs=1e-12
    )


def test_a_challenger_truly_better_on_the_new_rows_passes() -> None:
    for seed in range(3):
        y, x, _ = drifted(800, seed)
        # The champion learned the old relation (x1 only); the challenger the new one.
        old = sigmoid(1.0 * x[:, 0] - 1.0)
        new = sigmoid(1.0 * x[:, 0] + 1.0 * x[:, 1] - 0.5)
        result = verdict(y, new, old)
        assert result.passed, result.reasons  # type: ignore[attr-defined]
        section = result.comparison  # type: ignore[attr-defined]
        roc = section["metrics"]["roc_auc"]
        assert roc["improvement"] > CFG.min_improvement and roc["interval"][0] > 0
        assert section["rows"] == 800 and section["champion_version"] == "1"
        # Both models' values, the difference and its interval are in the note, which the
        # champion history and the monitor's retrain record repeat.
        note = result.note  # type: ignore[attr-defined]
        assert f"{roc['challenger']:.4f} vs champion version 1 {roc['champion']:.4f}" in note
        assert "90% CI" in note


def test_an_equal_challenger_within_noise_is_not_promoted_over_several_seeds() -> None:
    promoted = []
    for seed in range(8):
        y, _, p = drifted(800, seed)
        rng = np.random.default_rng(100 + seed)
        # Two models of the same quality: the truth seen through independent noise.
        logit = np.log(p / (1 - p))
        old = sigmoid(logit + rng.normal(0, 1.0, len(y)))
        new = sigmoid(logit + rng.normal(0, 1.0, len(y)))
        promoted.append(verdict(y, new, old).passed)  # type: ignore[attr-defined]
    assert not any(promoted)


def test_a_challenger_better_only_on_a_lucky_tiny_window_fails_on_its_interval() -> None:
    # Equal models judged on tiny windows of 30 rows: on about half of them the challenger
    # happens to be better by more than the margin. The interval, not the margin, stops those.
    lucky, promoted = 0, 0
    for seed in range(40):
        y, _, p = drifted(30, seed)
        rng = np.random.default_rng(500 + seed)
        logit = np.log(p / (1 - p))
        old = sigmoid(logit + rng.normal(0, 1.0, len(y)))
        new = sigmoid(logit + rng.normal(0, 1.0, len(y)))
        if len(set(y)) < 2 or roc_auc_score(y, new) - roc_auc_score(y, old) < CFG.min_improvement:
            continue
        lucky += 1
        result = verdict(y, new, old)
        checks = {c.name: c for c in result.checks}  # type: ignore[attr-defined]
        assert checks["retrain_improvement_roc_auc"].passed  # better by more than the margin
        if result.passed:  # type: ignore[attr-defined]
            promoted += 1  # the interval's own error rate: at most (1 - confidence) / 2
            continue
        assert not checks["retrain_interval_roc_auc"].passed
        assert "may be noise" in checks["retrain_interval_roc_auc"].reason
        assert checks["retrain_interval_roc_auc"].value <= 0  # type: ignore[operator]
    assert lucky >= 15  # the search found lucky windows to judge
    assert promoted <= 0.1 * lucky


def test_worse_on_another_metric_beyond_tolerance_fails() -> None:
    y, x, _ = drifted(800, 1)
    old = sigmoid(1.0 * x[:, 0] - 1.0)
    # Better ranking, but every probability pushed far too high: Brier score much worse.
    new = sigmoid(1.0 * x[:, 0] + 1.0 * x[:, 1] + 3.0)
    result = verdict(y, new, old)
    failed = [c.name for c in result.checks if not c.passed]  # type: ignore[attr-defined]
    assert failed == ["retrain_not_worse_brier"]


def test_no_champion_means_the_floors_alone() -> None:
    result = decide({"roc_auc": 0.50, "pr_auc": 0.3, "brier": 0.2}, FLOORS, CFG, "m", None)
    assert not result.passed
    assert result.reasons == ["roc_auc 0.5000 is below gate.min_roc_auc 0.5500"]


def test_shipped_retrain_floors_are_sanity_floors_and_the_offline_gate_is_unchanged() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.retrain.gate is not None
    assert params.retrain.gate.min_roc_auc == 0.55
    assert params.retrain.comparison.enabled
    # The offline gate for pull requests keeps its floors and its champion rule.
    assert params.gate.min_roc_auc == 0.70
    offline = offline_decide({"roc_auc": 0.62, "pr_auc": 0.5, "brier": 0.1}, params.gate, None, "m")
    assert not offline.passed and offline.comparison is None
