"""Global explanations of a model on the test split, for evaluate and the PR report.

Two views per raw feature: permutation importance (the drop in ROC AUC when the feature's
values are shuffled, mean and spread over a few fixed-seed repeats) and the mean |contribution|
of the per-decision explanations (:mod:`plumbline.model.explain`), so the global table and a single
decision's explanation are in the same units and come from the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plumbline.model.explain import Explainer, ExplainUnsupported, column_groups
from plumbline.model.metrics import roc_auc

IMPORTANCE_CSV = "reports/plots/importance.csv"
COLUMNS = ["feature", "permutation_importance", "permutation_std", "mean_abs_contribution"]
PERMUTATION_REPEATS = 5
# TreeSHAP over a few thousand rows already fixes the ranking; more only costs evaluate time.
CONTRIBUTION_ROWS = 1000


def global_importance(
    model: Any,
    frame: pd.DataFrame,
    y: np.ndarray,
    features: list[str],
    seed: int,
    transformed: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per feature, most important (by permutation) first; deterministic for a seed.

    Permutation importance: the test ROC AUC minus the ROC AUC with one feature's values
    shuffled across the rows, ``PERMUTATION_REPEATS`` shuffles each. The feature transformer
    works column by column (a scaled column, a block of one-hot indicators per feature), so
    shuffling a raw feature is shuffling its block of transformed columns: the rows are
    transformed once (or not at all, when the caller passes them ``transformed``) and only the
    estimator runs per shuffle.
    """
    from sklearn import config_context

    x_raw = frame[features].reset_index(drop=True)
    y = np.asarray(y)
    explainer: Explainer | None
    try:
        explainer = Explainer(model, features)
    except ExplainUnsupported:
        explainer = None
    transformer, estimator = model.steps[0][1], model.steps[-1][1]
    if transformed is None:
        transformed = model[:-1].transform(x_raw)
    x = np.asarray(transformed, dtype=np.float64)
    owner = explainer.owner if explainer is not None else column_groups(transformer, features)
    reference = roc_auc(y, _scores(estimator, x))  # the estimator checks x here, once
    rng = np.random.default_rng(seed)
    drops = np.zeros((len(features), PERMUTATION_REPEATS))
    shuffled = x.copy()  # one working copy: only the feature's own block moves, then returns
    # A shuffle only reorders rows of x, so its values stay as finite as the checked ones.
    with config_context(assume_finite=True):
        for j in range(len(features)):
            block = _columns(np.flatnonzero(owner == j))
            original = np.ascontiguousarray(x[:, block])
            for r in range(PERMUTATION_REPEATS):
                shuffled[:, block] = original[rng.permutation(len(x))]
                drops[j, r] = reference - roc_auc(y, _scores(estimator, shuffled))
            shuffled[:, block] = original
    contribution = np.full(len(features), np.nan)
    if explainer is not None:
        rows = np.sort(rng.choice(len(x), size=min(CONTRIBUTION_ROWS, len(x)), replace=False))
        attribution = explainer.explain(x[rows])
        contribution = np.abs(attribution.contributions).mean(axis=0)
    table = pd.DataFrame(
        {
            "feature": features,
            "permutation_importance": drops.mean(axis=1),
            "permutation_std": drops.std(axis=1),
            "mean_abs_contribution": contribution,
        }
    )
    return table.sort_values(
        ["permutation_importance", "feature"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def _columns(block: np.ndarray) -> slice | np.ndarray:
    """A feature's transformed columns; a contiguous run as a slice, which numpy copies
    through far faster than a list of column indices."""
    if len(block) and block[-1] - block[0] + 1 == len(block):
        return slice(int(block[0]), int(block[-1]) + 1)
    return block


def _scores(estimator: Any, x: np.ndarray) -> np.ndarray:
    """A monotone score of the positive class (ROC AUC needs only the order)."""
    if hasattr(estimator, "decision_function"):
        return np.asarray(estimator.decision_function(x), dtype=np.float64).reshape(-1)
    return np.asarray(estimator.predict_proba(x)[:, 1], dtype=np.float64)


def render_figure(table: pd.DataFrame, path: Path, top: int = 15) -> Path:
    """Horizontal bars: permutation importance (with its spread) and mean |contribution|."""
    from matplotlib.figure import Figure

    shown = table.head(top).iloc[::-1]
    fig = Figure(figsize=(9, 0.35 * len(shown) + 1.5))
    left, right = fig.subplots(1, 2, sharey=True)
    positions = np.arange(len(shown))
    left.barh(positions, shown.permutation_importance, xerr=shown.permutation_std, color="C0")
    left.set_yticks(positions, list(shown.feature))
    left.set(xlabel="ROC AUC drop when shuffled", title="Permutation importance")
    right.barh(positions, shown.mean_abs_contribution.fillna(0.0), color="C1")
    right.set(xlabel="mean |contribution| (log-odds)", title="Mean |contribution|")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def markdown_table(table: pd.DataFrame, top: int = 10) -> str:
    """The report.md / model card table of the top features."""
    lines = [
        "| Feature | Permutation importance (ROC AUC drop) | Mean \\|contribution\\| (log-odds) |",
        "|---|---:|---:|",
    ]
    for row in table.head(top).itertuples(index=False):
        contribution = (
            "-" if pd.isna(row.mean_abs_contribution) else f"{row.mean_abs_contribution:.4f}"
        )
        lines.append(
            f"| {row.feature} | {row.permutation_importance:.4f} ± {row.permutation_std:.4f} "
            f"| {contribution} |"
        )
    return "\n".join(lines)


def read_table(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None
