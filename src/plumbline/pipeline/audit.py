"""The audit reports that evaluate writes beside the metrics.

* ``reports/fairness.json`` (DVC metrics) and ``reports/plots/fairness.csv``: per-slice metrics
  and disparities (:mod:`plumbline.model.fairness`);
* ``reports/plots/importance.csv``: permutation importance and mean |contribution| per feature
  (:mod:`plumbline.model.importance`);
* their PNGs in ``reports/figures/``;
* ``reports/model_card.md`` (:mod:`plumbline.pipeline.model_card`).

Everything is a pure function of the model, the data and the params (fixed seeds), so the
files hash the same on every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

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


def _row_range(values: pd.Series) -> str:
    return f"{int(values.min())}-{int(values.max())}" if len(values) else "-"


def _record(path: Path) -> dict[str, Any]:
    """A stage's JSON record; empty when that stage has not run here (the card says so)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def split_facts(
    params: PipelineParams, contract: Contract, paths: Layout, test: pd.DataFrame
) -> dict[str, Any]:
    train_rows = (
        pq.read_table(paths.train_split, columns=[SOURCE_ROW]).column(0).to_pandas()
        if paths.train_split.is_file()
        else pd.Series([], dtype="int64")
    )
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


def write_reports(
    params: PipelineParams,
    contract: Contract,
    paths: Layout,
    model: Any,
    test: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    metrics: dict[str, float],
    transformed: np.ndarray | None = None,
) -> list[Path]:
    """Write the audit reports; returns the PNGs (for MLflow). ``transformed``: the test rows
    through the model's transformer, when the caller has them."""
    threshold = params.evaluate.threshold
    features = contract.feature_columns(params.featurize.exclude_columns)
    fairness = fairness_report(test.reset_index(drop=True), y, p, contract, threshold)
    write_json(fairness, paths / FAIRNESS_FILE)
    plot_rows(fairness).to_csv(paths / FAIRNESS_CSV, index=False, float_format="%.6f")
    importance = global_importance(model, test, y, features, SEED, transformed)
    importance.to_csv(paths / IMPORTANCE_CSV, index=False, float_format="%.6f")
    figures = [
        render_figure(importance, paths.figures / "importance.png"),
        render_fairness_figure(fairness, paths.figures / "fairness.png"),
    ]
    card = ModelMetadata.read(paths.model_metadata)
    inputs = CardInputs(
        estimator=card.estimator,
        contract=contract,
        features=features,
        excluded=list(params.featurize.exclude_columns),
        ingest=_record(paths.ingest_record),
        validation=_record(paths.validation_report),
        split=split_facts(params, contract, paths, test),
        metrics={k: round(v, 6) for k, v in metrics.items()},
        intervals=bootstrap_intervals(y, p, threshold, SEED),
        fairness=fairness,
        # the card shows what the CSV holds (rounded as written)
        importance=pd.read_csv(paths / IMPORTANCE_CSV),
        data_hashes=dict(sorted(card.data_hashes.items())),
    )
    (paths / MODEL_CARD_FILE).write_text(render(inputs))
    return figures
