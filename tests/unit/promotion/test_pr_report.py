"""report.md's sections that need no git or DVC: the gate verdict and the plot links."""

from __future__ import annotations

from pathlib import Path

from plumbline.core.paths import Layout
from plumbline.promotion.gate import ChampionScore, decide
from plumbline.promotion.pr_report import PLOTS, gate_section, plots_section
from plumbline.promotion.settings import GateConfig

GATE = GateConfig(min_roc_auc=0.7, min_pr_auc=0.45, max_brier=0.21, max_regression=0.01)


def test_a_gate_that_has_not_run_says_how_to_run_it(tmp_path: Path) -> None:
    text, passed = gate_section(tmp_path / "gate.json")
    assert passed is None
    assert "`plumbline gate`" in text


def test_a_failed_gate_lists_each_reason_and_marks_the_failed_rows(tmp_path: Path) -> None:
    metrics = {"roc_auc": 0.65, "pr_auc": 0.5, "brier": 0.2, "rows": 800.0}
    champion = ChampionScore("3", {"roc_auc": 0.75, "pr_auc": 0.5, "brier": 0.2}, rows=800)
    result = decide(metrics, GATE, champion, "m")
    result.write(tmp_path / "gate.json")
    text, passed = gate_section(tmp_path / "gate.json")
    assert passed is False
    assert text.startswith("Gate **failed**: compared with champion version 3")
    reasons = [line for line in text.splitlines() if line.startswith("- ")]
    assert reasons == [f"- {r}" for r in result.reasons] and len(reasons) == 2
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Check" not in line]
    assert len(rows) == len(result.checks)
    failed = {line.split(" | ")[0].strip("| ") for line in rows if "**FAIL**" in line}
    assert failed == {"min_roc_auc", "champion_roc_auc"}


def test_plots_link_relative_to_the_report_and_name_what_is_missing(tmp_path: Path) -> None:
    paths = Layout(tmp_path)
    paths.figures.mkdir(parents=True)
    (first, title), *rest = PLOTS
    (paths.figures / f"{first}.png").write_bytes(b"\x89PNG")
    text, images = plots_section(paths, tmp_path / "out")
    assert images == [paths.figures / f"{first}.png"]
    assert f"![{title}](../reports/figures/{first}.png)" in text
    for name, _ in rest:
        assert f"`reports/figures/{name}.png`" in text


def test_explanations_section_shows_the_top_features_and_links_the_card(tmp_path: Path) -> None:
    import pandas as pd

    from plumbline.model.importance import IMPORTANCE_CSV
    from plumbline.pipeline.model_card import MODEL_CARD_FILE
    from plumbline.promotion.pr_report import explanations_section

    paths = Layout(tmp_path)
    assert "No importance table" in explanations_section(paths, tmp_path)
    table = pd.DataFrame(
        {
            "feature": [f"f{i}" for i in range(12)],
            "permutation_importance": [0.1 - i * 0.01 for i in range(12)],
            "permutation_std": [0.001] * 12,
            "mean_abs_contribution": [0.5] * 11 + [float("nan")],
        }
    )
    (tmp_path / "reports/plots").mkdir(parents=True)
    table.to_csv(tmp_path / IMPORTANCE_CSV, index=False)
    (tmp_path / MODEL_CARD_FILE).write_text("# card\n")
    section = explanations_section(paths, tmp_path)
    rows = [line for line in section.splitlines() if line.startswith("| f")]
    assert [r.split(" | ")[0] for r in rows] == [f"| f{i}" for i in range(10)]  # top 10
    assert "| f0 | 0.1000 ± 0.0010 | 0.5000 |" in section
    assert "Model card: [reports/model_card.md](reports/model_card.md)" in section
