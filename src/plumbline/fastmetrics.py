"""The test metrics in plain numpy, for the loops that compute them hundreds of times.

Bootstrap intervals (200 resamples) and permutation importance (features x repeats) would
spend most of evaluate's time in scikit-learn's input checks; these functions compute the same
values as :func:`plumbline.metrics.classification_metrics` (checked to 1e-9 by a test) in
about a millisecond on the test split.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney U over the positive ranks (ties get average ranks), as roc_auc_score."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Σ (R_n - R_{n-1}) P_n over the distinct thresholds, as average_precision_score."""
    order = np.argsort(-p, kind="mergesort")
    scores, hits = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie block
    tp = np.cumsum(hits)[last]
    predicted = last + 1
    positives = tp[-1]
    if positives == 0:
        return float("nan")
    recall = tp / positives
    precision = tp / predicted
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def score_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """roc_auc, pr_auc, precision, recall, f1, log_loss, brier (zero_division=0)."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    log_loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "log_loss": log_loss,
        "brier": float(np.mean((p - y) ** 2)),
    }
