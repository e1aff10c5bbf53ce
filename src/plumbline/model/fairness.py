"""Metrics broken down by the contract's slices, and the disparities between their groups.

Each slice (``slices:`` in the contract) names a column, numbers binned into ``[a, b)`` bands.
Per group fairlearn's ``MetricFrame`` computes rows, positive rate (actual), selection rate
(predicted positive), ROC AUC, TPR, FPR and precision at the decision threshold; per slice the
summary disparities: demographic parity difference and ratio (of selection rates) and the
equalized odds difference (the larger of the TPR and FPR gaps). Written to
``reports/fairness.json`` by evaluate; read by the gate's optional limits and by the monitor.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from plumbline.core.contract import Contract, SliceSpec
from plumbline.model.verdict import Check

FAIRNESS_FILE = "reports/fairness.json"
GROUP_METRICS = ("rows", "positive_rate", "selection_rate", "roc_auc", "tpr", "fpr", "precision")


def band_label(low: float, high: float) -> str:
    return f"[{_num(low)}, {_num(high)})"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def slice_values(values: pd.Series | np.ndarray, spec: SliceSpec) -> np.ndarray:
    """The group label of each value: its band for binned numbers, else the value as text.

    Values outside the bins and missing values get the group ``other`` / ``missing``.
    """
    series = pd.Series(values).reset_index(drop=True)
    missing = series.isna().to_numpy()
    if spec.bins is None:
        labels = series.astype(object).map(str).to_numpy(dtype=object)
    else:
        edges = np.asarray(spec.bins, dtype=np.float64)
        x = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        index = np.searchsorted(edges, x, side="right") - 1
        names = [band_label(a, b) for a, b in pairwise(edges)]
        inside = (index >= 0) & (index < len(names))
        labels = np.array(
            [names[i] if ok else "other" for i, ok in zip(index, inside, strict=True)],
            dtype=object,
        )
    labels[missing] = "missing"
    return labels


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of a group's rows; undefined (NaN, reported as null) when the group holds one
    class only or sklearn refuses its scores."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) != 2:
        return math.nan
    try:
        return float(roc_auc_score(y, p))
    except ValueError:
        return math.nan


def _rate(num: np.ndarray, den: np.ndarray | None, weights: np.ndarray) -> float:
    """The weighted share of ``num`` among ``den`` (None: among all cells)."""
    total = float(weights.sum() if den is None else weights[den].sum())
    return float(weights[num].sum()) / total if total else math.nan


# Metrics of (outcome, decision) cells weighted by how many rows each cell holds.
_CELL_METRICS: dict[str, Any] = {
    "rows": lambda y, d, sample_weight: float(sample_weight.sum()),
    "positive_rate": lambda y, d, sample_weight: _rate(y == 1, None, sample_weight),
    "selection_rate": lambda y, d, sample_weight: _rate(d == 1, None, sample_weight),
    "tpr": lambda y, d, sample_weight: _rate((d == 1) & (y == 1), y == 1, sample_weight),
    "fpr": lambda y, d, sample_weight: _rate((d == 1) & (y == 0), y == 0, sample_weight),
    "precision": lambda y, d, sample_weight: _rate((d == 1) & (y == 1), d == 1, sample_weight),
}


def slice_report(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Per-group metrics and the slice's disparities (fairlearn MetricFrame)."""
    from fairlearn.metrics import MetricFrame

    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    # Every metric but ROC AUC depends on each row's group, outcome and decision only:
    # fairlearn gets one row per distinct (group, outcome, decision) weighted by how many rows
    # have it, since it copies each group's rows element by element for every metric (which
    # dominated evaluate on large test splits). The weights are whole counts, so the rates
    # are exactly those of the rows themselves.
    cells = (
        pd.DataFrame({"group": groups, "y": y, "decision": (p >= threshold).astype(np.int64)})
        .value_counts(sort=False)
        .reset_index(name="rows")
    )
    weights = cells["rows"].to_numpy(dtype=np.float64)
    frame = MetricFrame(
        metrics=_CELL_METRICS,
        y_true=cells["y"].to_numpy(),
        y_pred=cells["decision"].to_numpy(),
        sensitive_features=pd.Series(cells["group"].to_numpy(dtype=object), name="group"),
        sample_params={name: {"sample_weight": weights} for name in _CELL_METRICS},
    )
    by_group = frame.by_group
    result: dict[str, Any] = {"groups": {}}
    for group, row in by_group.iterrows():
        rows = groups == group
        entry = {
            name: _clean(_roc_auc(y[rows], p[rows]) if name == "roc_auc" else row[name])
            for name in GROUP_METRICS
        }
        entry["rows"] = int(row["rows"])
        result["groups"][str(group)] = entry
    selection = by_group["selection_rate"].astype(float)
    gaps = frame.difference(method="between_groups")
    ratios = frame.ratio(method="between_groups")
    result["demographic_parity_difference"] = _clean(gaps["selection_rate"])
    result["demographic_parity_ratio"] = _clean(ratios["selection_rate"])
    # fairlearn's equalized_odds_difference: the larger of the TPR and FPR differences.
    result["equalized_odds_difference"] = _clean(max(gaps["tpr"], gaps["fpr"]))
    result["highest_selection_group"] = str(selection.idxmax())
    result["lowest_selection_group"] = str(selection.idxmin())
    return result


def fairness_report(
    frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, contract: Contract, threshold: float
) -> dict[str, Any]:
    """reports/fairness.json: every contract slice's table; empty when there are none."""
    report: dict[str, Any] = {"threshold": threshold, "slices": {}}
    for name, spec in contract.slices.items():
        groups = slice_values(frame[spec.column], spec)
        report["slices"][name] = slice_report(y, p, groups, threshold)
    return report


def _clean(value: Any) -> float | None:
    """JSON has no NaN: an undefined metric is null. Rounded so reports diff readably."""
    number = float(value)
    return None if math.isnan(number) else round(number, 6)


def plot_rows(report: dict[str, Any]) -> pd.DataFrame:
    """The DVC plot's data: one row per (slice, group) with its selection rate, TPR and FPR."""
    rows = []
    for slice_name, table in report["slices"].items():
        for group, entry in table["groups"].items():
            rows.append(
                {
                    "group": f"{slice_name}={group}",
                    "selection_rate": entry["selection_rate"],
                    "tpr": entry["tpr"],
                    "fpr": entry["fpr"],
                    "rows": entry["rows"],
                }
            )
    return pd.DataFrame(rows, columns=["group", "selection_rate", "tpr", "fpr", "rows"])


def fairness_checks(report: dict[str, Any], limits: Any) -> list[Check]:
    """The gate's fairness checks: one per configured limit and slice, naming the slice."""
    checks: list[Check] = []
    if limits is None:
        return checks
    if "slices" not in report and any(
        v is not None
        for v in (limits.max_demographic_parity_difference, limits.max_equalized_odds_difference)
    ):
        reason = f"gate.fairness sets limits but {FAIRNESS_FILE} is missing: run `dvc repro`"
        return [Check("fairness_report", "", None, 0.0, "==", False, reason)]
    pairs = (
        ("max_demographic_parity_difference", "demographic_parity_difference"),
        ("max_equalized_odds_difference", "equalized_odds_difference"),
    )
    for limit_key, metric in pairs:
        limit = getattr(limits, limit_key)
        if limit is None:
            continue
        for name, table in report.get("slices", {}).items():
            value = table.get(metric)
            ok = value is None or value <= limit
            reason = (
                ""
                if ok
                else f"slice {name!r}: {metric} {value:.4f} is above gate.fairness.{limit_key} "
                f"{limit:.4f} (selection rate highest in {table['highest_selection_group']!r}, "
                f"lowest in {table['lowest_selection_group']!r})"
            )
            checks.append(
                Check(
                    f"fairness_{name}_{metric}",
                    metric,
                    None if value is None else float(value),
                    float(limit),
                    "<=",
                    ok,
                    reason,
                )
            )
    return checks
