"""The audit reports that evaluate writes beside the metrics.

* ``reports/fairness.json`` (DVC metrics) and ``reports/plots/fairness.csv``: per-slice metrics
  and disparities (:mod:`plumbline.model.fairness`);
* ``reports/plots/importance.csv``: permutation importance and mean |contribution| per feature
  (:mod:`plumbline.model.importance`);
* their PNGs in ``reports/figures/``;
* ``reports/model_card.md`` (:mod:`plumbline.pipeline.model_card`).

Everything is a pure function of the model, the data and the params (fixed seeds), so the
files hash the same on every run. :func:`audit` computes the reports in memory,
:func:`write_reports` writes them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plumbline.core.artifacts import write_json
from plumbline.core.contract import SOURCE_ROW, Contract
from plumbline.core.paths import Layout
from plumbline.model.artifact import ModelMetadata
from plumbline.model.fairness import FAIRNESS_FILE, fairness_report, plot_rows
from plumbline.model.importance import IMPORTANCE_CSV, global_importance, render_figure
from plumbline.pipeline.model_card import MODEL_CARD_FILE, CardInputs, bootstrap_intervals, render
from plumbline.pipeline.settings import PipelineParams

FAIRNESS_CSV = "reports/plots/fairness.csv"
SEED = 0  # permutation and bootstrap resampling; fixed so the reports are reproducible


def render_fairness_figure(report: dict[str, Any], path: Path) -> Path:
    """Selection rate, TPR and FPR per group of every slice (a note when there are none)."""
    from matplotlib.figure import Figure

    table = plot_rows(report)
    fig = Figure(figsize=(7, 0.4 * max(len(table), 3) + 1.5))
    ax = fig.subplots()
    if table.empty:
        ax.text(0.5, 0.5, "no slices in the contract", ha="center", va="center")
        ax.set_axis_off()
    else:
        shown = table.iloc[::-1]
        positions = np.arange(len(shown))
        height = 0.27
        for offset, column, color in (
            (-1, "selection_rate", "C0"),
            (0, "tpr", "C2"),
            (1, "fpr", "C3"),
        ):
            ax.barh(
                positions + offset * height,
                shown[column].astype(float).fillna(0.0),
                height=height,
                label=column,
                color=color,
            )
        ax.set_yticks(positions, list(shown.group))
        ax.set(xlim=(0, 1), xlabel=f"rate at threshold {report['threshold']:.2f}")
        ax.legend(loc="lower right")
    ax.set_title("Per-slice rates (test split)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


@dataclass
class Audit:
    fairness: dict[str, Any]  # reports/fairness.json; its plot rows are fairness.csv
    importance: pd.DataFrame  # reports/plots/importance.csv
    model_card: str  # reports/model_card.md


def _row_range(values: pd.Series) -> str:
    return f"{int(values.min())}-{int(values.max())}" if len(values) else "-"


def split_facts(
    params: PipelineParams, contract: Contract, train_rows: pd.Series, test: pd.DataFrame
) -> dict[str, Any]:
    """The card's split section; ``train_rows``: the training split's source rows."""
    cfg = params.featurize
    order = (
        f"Time-ordered by `{contract.time_column}`"
        if contract.time_column
        else "Time-ordered by position"
        if contract.rows_time_ordered
        else "Random split"
    )
    return {
        "order": order,
        "train_fraction": cfg.train_fraction,
        "test_fraction": cfg.test_fraction,
        "train_rows": len(train_rows),
        "test_rows": len(test),
        "train_range": _row_range(train_rows),
        "test_range": _row_range(test[SOURCE_ROW]) if SOURCE_ROW in test else "-",
    }


def _as_written(table: pd.DataFrame) -> pd.DataFrame:
    """The table as its CSV holds it (rounded as written), which is what the card shows."""
    return pd.read_csv(io.StringIO(table.to_csv(index=False, float_format="%.6f")))


def audit(
    params: PipelineParams,
    contract: Contract,
    model: Any,
    test: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    metrics: dict[str, float],
    card: ModelMetadata,
    train_rows: pd.Series,
    ingest: dict[str, Any],
    validation: dict[str, Any],
    transformed: np.ndarray | None = None,
) -> Audit:
    """The audit reports of the model's scores ``p`` on the test rows. ``card``, ``train_rows``
    (the training split's source rows), ``ingest`` and ``validation`` (those stages' records,
    empty when they have not run here) are what the model card tells of the earlier stages;
    ``transformed``: the test rows through the model's transformer, when the caller has them."""
    threshold = params.evaluate.threshold
    features = contract.feature_columns(params.featurize.exclude_columns)
    fairness = fairness_report(test.reset_index(drop=True), y, p, contract, threshold)
    importance = global_importance(model, test, y, features, SEED, transformed)
    inputs = CardInputs(
        estimator=card.estimator,
        contract=contract,
        features=features,
        excluded=list(params.featurize.exclude_columns),
        ingest=ingest,
        validation=validation,
        split=split_facts(params, contract, train_rows, test),
        metrics={k: round(v, 6) for k, v in metrics.items()},
        intervals=bootstrap_intervals(y, p, threshold, SEED),
        fairness=fairness,
        importance=_as_written(importance),
        data_hashes=dict(sorted(card.data_hashes.items())),
        tuning=card.tuning,
    )
    return Audit(fairness=fairness, importance=importance, model_card=render(inputs))


def write_reports(reports: Audit, paths: Layout) -> list[Path]:
    """Write the audit reports; returns the PNGs (for MLflow)."""
    write_json(reports.fairness, paths / FAIRNESS_FILE)
    (paths / FAIRNESS_CSV).parent.mkdir(parents=True, exist_ok=True)
    plot_rows(reports.fairness).to_csv(paths / FAIRNESS_CSV, index=False, float_format="%.6f")
    reports.importance.to_csv(paths / IMPORTANCE_CSV, index=False, float_format="%.6f")
    figures = [
        render_figure(reports.importance, paths.figures / "importance.png"),
        render_fairness_figure(reports.fairness, paths.figures / "fairness.png"),
    ]
    (paths / MODEL_CARD_FILE).write_text(reports.model_card)
    return figures
