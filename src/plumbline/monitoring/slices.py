"""Live per-slice rates: the contract's slices (:mod:`plumbline.model.fairness`) over served
traffic.

Over the newest logged rows of the serving version: rows and the positive rate (share of
positive predicted labels) per group of every slice; over its newest labelled rows, once there
are ``monitor.min_labelled_rows`` of them: TPR and FPR per group. Exported by the monitor as
``plumbline_live_slice_*`` and shown on the Grafana dashboard, beside the offline table in
``reports/fairness.json``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from plumbline.core.contract import Contract
from plumbline.model.fairness import slice_values

METRICS: dict[str, str] = {
    "plumbline_live_slice_rows": "Logged rows per slice group in the newest window of the "
    "serving version",
    "plumbline_live_slice_positive_rate": "Share of positive predicted labels per slice group "
    "over the same rows",
    "plumbline_live_slice_tpr": "True positive rate per slice group over the newest labelled "
    "rows of the serving version",
    "plumbline_live_slice_fpr": "False positive rate per slice group over the same rows",
}


@dataclass
class SliceRate:
    slice: str
    group: str
    rows: int
    positive_rate: float
    labelled_rows: int = 0
    tpr: float | None = None
    fpr: float | None = None


def live_slices(
    window: pd.DataFrame, labelled: pd.DataFrame | None, contract: Contract
) -> list[dict[str, Any]]:
    """One entry per (slice, group) seen in ``window``; TPR/FPR from ``labelled`` if given."""
    out: list[dict[str, Any]] = []
    for name, spec in contract.slices.items():
        if spec.column not in window.columns:
            continue
        groups = slice_values(window[spec.column], spec)
        labels = window["label"].to_numpy(dtype=float)
        rates: dict[str, SliceRate] = {}
        for group in sorted(set(groups)):
            mask = groups == group
            rates[group] = SliceRate(name, group, int(mask.sum()), float(labels[mask].mean()))
        if labelled is not None and not labelled.empty:
            lab_groups = slice_values(labelled[spec.column], spec)
            y = labelled["outcome"].to_numpy(dtype=np.int64)
            pred = labelled["label"].to_numpy(dtype=np.int64)
            for group, rate in rates.items():
                mask = lab_groups == group
                rate.labelled_rows = int(mask.sum())
                pos, neg = mask & (y == 1), mask & (y == 0)
                rate.tpr = float(pred[pos].mean()) if pos.any() else None
                rate.fpr = float(pred[neg].mean()) if neg.any() else None
        out.extend(asdict(r) for r in rates.values())
    return out


def families(slices: list[dict[str, Any]], version: str | None) -> Iterator[Any]:
    """The Prometheus families of a snapshot's slice rates (empty families when none)."""
    from prometheus_client.core import GaugeMetricFamily

    labels = ["slice", "group", "model_version"]
    for name, key in (
        ("plumbline_live_slice_rows", "rows"),
        ("plumbline_live_slice_positive_rate", "positive_rate"),
        ("plumbline_live_slice_tpr", "tpr"),
        ("plumbline_live_slice_fpr", "fpr"),
    ):
        family = GaugeMetricFamily(name, METRICS[name], labels=labels)
        if version is not None:
            for entry in slices:
                value = entry.get(key)
                if value is not None and math.isfinite(float(value)):
                    family.add_metric([entry["slice"], entry["group"], version], float(value))
        yield family
