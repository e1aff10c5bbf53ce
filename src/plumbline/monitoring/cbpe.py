"""Estimated live performance before the labels arrive: confidence-based performance
estimation (CBPE, the method of NannyML).

If the model is calibrated, a row scored ``p`` is positive with probability ``p``, so the
confusion matrix at the decision threshold has an expected value computable from the scores
alone: an accepted row (``p >= threshold``) adds ``p`` to the expected true positives and
``1 - p`` to the false positives, a refused one ``p`` to the false negatives and ``1 - p`` to
the true negatives. Precision and recall follow from those expectations. The estimated ROC AUC
is the AUC with each row counted as a positive with weight ``p`` and as a negative with weight
``1 - p`` (the expected ROC curve, integrated).

The estimate holds under covariate shift (the inputs move, P(outcome | inputs) does not) and
only for a calibrated model, so the monitor exports it only when the serving version's expected
calibration error on its test split (``ece`` in its reports/metrics.json, written by evaluate)
is at most ``monitor.estimate.max_ece``; otherwise it exports nothing and says why in
``GET /status`` (``estimate.reason``). NannyML itself is not a dependency: its pins (old pandas
and scikit-learn) do not fit the project's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# The series this module adds to the monitor's /metrics (merged into monitor.METRICS).
ESTIMATE_METRICS: dict[str, str] = {
    "plumbline_live_estimated_roc_auc": "ROC AUC of the serving version estimated from its own "
    "scores on the newest logged rows (CBPE), before their outcomes arrive",
    "plumbline_live_estimated_precision": "Precision at serve.threshold estimated from the "
    "scores (CBPE)",
    "plumbline_live_estimated_recall": "Recall at serve.threshold estimated from the scores (CBPE)",
    "plumbline_live_estimated_rows": "Logged rows the estimate is computed on",
    "plumbline_live_estimate_available": "1 when an estimate is exported; 0 when it is "
    "withheld (too few rows, or the version is not calibrated: see GET /status)",
    "plumbline_model_test_ece": "Expected calibration error of the serving version on its test "
    "split (from reports/metrics.json)",
}


@dataclass(frozen=True)
class Estimate:
    """The estimate for one version, or the reason there is none (``available`` False)."""

    model_version: str
    rows: int
    available: bool
    reason: str
    roc_auc: float | None = None
    precision: float | None = None
    recall: float | None = None
    threshold: float = 0.5
    reference_ece: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_confusion(p: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    """Expected (TP, FP, FN, TN) of calibrated probabilities ``p`` at ``threshold``."""
    p = np.asarray(p, dtype=float)
    accepted = p >= threshold
    tp = float(p[accepted].sum())
    fp = float((1 - p[accepted]).sum())
    fn = float(p[~accepted].sum())
    tn = float((1 - p[~accepted]).sum())
    return tp, fp, fn, tn


def estimated_roc_auc(p: np.ndarray) -> float | None:
    """The expected ROC AUC of calibrated scores: every row a positive with weight ``p`` and
    a negative with weight ``1 - p``. None when the scores carry no ranking (all 0 or 1)."""
    from sklearn.metrics import roc_auc_score

    p = np.asarray(p, dtype=float)
    weights = np.concatenate([p, 1 - p])
    if p.sum() <= 0 or (1 - p).sum() <= 0:
        return None
    labels = np.concatenate([np.ones(len(p)), np.zeros(len(p))])
    return float(roc_auc_score(labels, np.concatenate([p, p]), sample_weight=weights))


def estimate(
    p: np.ndarray,
    version: str,
    threshold: float,
    reference_ece: float | None,
    max_ece: float,
    min_rows: int,
) -> Estimate:
    """CBPE on the scores ``p`` of one version, or the reason for withholding it."""
    rows = len(p)

    def withheld(reason: str) -> Estimate:
        return Estimate(version, rows, False, reason, None, None, None, threshold, reference_ece)

    if reference_ece is None:
        return withheld(
            f"no calibration figure for version {version}: its reports/metrics.json has no "
            "'ece' (evaluate it again); CBPE needs a calibrated model"
        )
    if reference_ece > max_ece:
        return withheld(
            f"version {version} is poorly calibrated: expected calibration error "
            f"{reference_ece:.4f} on its test split is above monitor.estimate.max_ece "
            f"{max_ece:.4f}, so its scores cannot estimate its performance (calibrate it: "
            "train.calibration)"
        )
    if rows < min_rows:
        return withheld(
            f"{rows} logged rows of version {version}; monitor.estimate.min_rows is {min_rows}"
        )
    tp, fp, fn, _ = expected_confusion(p, threshold)
    return Estimate(
        model_version=version,
        rows=rows,
        available=True,
        reason="",
        roc_auc=estimated_roc_auc(p),
        precision=tp / (tp + fp) if tp + fp > 0 else None,
        recall=tp / (tp + fn) if tp + fn > 0 else None,
        threshold=threshold,
        reference_ece=reference_ece,
    )


def families(est: Estimate | None, gauge: Callable[[str, Sequence[str]], Any]) -> Iterator[Any]:
    """The estimate's Prometheus gauges (``gauge(name, labels)`` makes a family)."""
    values = {
        "plumbline_live_estimated_roc_auc": "roc_auc",
        "plumbline_live_estimated_precision": "precision",
        "plumbline_live_estimated_recall": "recall",
    }
    for name, attr in values.items():
        family = gauge(name, ["model_version"])
        value = getattr(est, attr) if est is not None and est.available else None
        if est is not None and value is not None and np.isfinite(value):
            family.add_metric([est.model_version], float(value))
        yield family
    rows = gauge("plumbline_live_estimated_rows", ["model_version"])
    available = gauge("plumbline_live_estimate_available", ["model_version"])
    ece = gauge("plumbline_model_test_ece", ["model_version"])
    if est is not None:
        rows.add_metric([est.model_version], float(est.rows))
        available.add_metric([est.model_version], float(est.available))
        if est.reference_ece is not None:
            ece.add_metric([est.model_version], est.reference_ece)
    yield from (rows, available, ece)
