"""Comparing two models on labelled rows: ROC AUC, PR AUC, log loss, Brier, with bootstrap
confidence intervals of the difference and a verdict.

* **Paired** (shadow mode: both models scored the same rows): one bootstrap resample of the
  rows is applied to both models, so the interval is that of the difference on the same
  rows, which is far narrower than the two separate intervals.
* **Unpaired** (canary mode: each model answered other rows): each arm's rows are resampled
  on their own, and the difference of the two resampled metrics gives the interval.

Every resample is a vector of row weights (how often each row was drawn), and each metric is
computed for all resamples at once from the rows sorted by score once: ROC AUC as the
weighted Mann-Whitney statistic (ties count a half), PR AUC as average precision (the
step-wise area scikit-learn's ``average_precision_score`` computes), log loss and Brier as
weighted means. With weights of one the figures equal scikit-learn's.

The verdict is on the challenger's improvement (challenger minus champion for ROC AUC and
PR AUC, champion minus challenger for log loss and Brier): ``better`` when the whole 95 %
interval is above ``margin``, ``worse`` when it is entirely below 0, else ``no difference
yet``. Identical scores give an interval of exactly [0, 0]: never better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}
BETTER, WORSE, UNDECIDED = "better", "worse", "no difference yet"
_EPS = 1e-15  # log loss clips probabilities as scikit-learn does
_CHUNK = 250  # resamples computed together (memory: chunk x rows floats per array)


@dataclass(frozen=True)
class Comparison:
    metric: str
    champion: float
    challenger: float
    difference: float  # challenger - champion
    low: float  # 95 % interval of the difference
    high: float
    champion_rows: int
    challenger_rows: int
    paired: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- weighted metrics, many weight vectors at once ------------------------------------------


def _groups(p: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sort order of ``p`` and the start of each run of equal scores in that order."""
    order = np.argsort(-p if descending else p, kind="mergesort")
    s = p[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def _roc_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    order, starts = _groups(p, descending=False)
    wy = w[:, order] * y[order]
    wn = w[:, order] - wy
    pos = np.add.reduceat(wy, starts, axis=1)
    neg = np.add.reduceat(wn, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result: np.ndarray = (pos * (below + 0.5 * neg)).sum(axis=1) / total
    return result


def _pr_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    order, starts = _groups(p, descending=True)
    wy = w[:, order] * y[order]
    wn = w[:, order] - wy
    pos = np.add.reduceat(wy, starts, axis=1)
    neg = np.add.reduceat(wn, starts, axis=1)
    tp = np.cumsum(pos, axis=1)
    fp = np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        result: np.ndarray = (pos * precision).sum(axis=1) / pos.sum(axis=1)
    return result


def _mean_loss(losses: np.ndarray, w: np.ndarray) -> np.ndarray:
    result: np.ndarray = (w @ losses) / w.sum(axis=1)
    return result


def _log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return _mean_loss(-(y * np.log(q) + (1 - y) * np.log(1 - q)), w)


def _brier(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _mean_loss((p - y) ** 2, w)


_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "roc_auc": _roc_auc,
    "pr_auc": _pr_auc,
    "log_loss": _log_loss,
    "brier": _brier,
}


def metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """One metric on all rows (weights of one)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return float(_FUNCTIONS[name](y, p, np.ones((1, len(y))))[0])


def _resample_weights(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` bootstrap resamples of ``n`` rows as draw counts per row (count x n)."""
    draws = rng.integers(0, n, size=(count, n)) + (np.arange(count) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=count * n).reshape(count, n).astype(np.float64)


def _bootstrap(
    name: str,
    arms: list[tuple[np.ndarray, np.ndarray]],
    paired: bool,
    resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap values of challenger - champion (arms: [(y, p) champion, (y, p) challenger])."""
    fn = _FUNCTIONS[name]
    out: list[np.ndarray] = []
    done = 0
    while done < resamples:
        count = min(_CHUNK, resamples - done)
        (y0, p0), (y1, p1) = arms
        w0 = _resample_weights(rng, len(y0), count)
        w1 = w0 if paired else _resample_weights(rng, len(y1), count)
        out.append(fn(y1, p1, w1) - fn(y0, p0, w0))
        done += count
    return np.concatenate(out)


def decide(name: str, low: float, high: float, margin: float) -> str:
    """The verdict on the interval of challenger - champion."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return UNDECIDED
    if not HIGHER_IS_BETTER[name]:
        low, high = -high, -low  # as an improvement: positive = the challenger is better
    if low > margin:
        return BETTER
    if high < 0.0:
        return WORSE
    return UNDECIDED


def compare(
    name: str,
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    paired: bool,
    margin: float = 0.0,
    resamples: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Compare on ``(outcomes, scores)`` per arm; ``paired``: the same rows in the same order;
    ``confidence``: of the two-sided percentile interval."""
    y0, p0 = (np.asarray(a, dtype=np.float64) for a in champion)
    y1, p1 = (np.asarray(a, dtype=np.float64) for a in challenger)
    if paired and (len(y0) != len(y1) or not np.array_equal(y0, y1)):
        raise ValueError("a paired comparison needs the same rows (and outcomes) in both arms")
    value0, value1 = metric(name, y0, p0), metric(name, y1, p1)
    diffs = _bootstrap(name, [(y0, p0), (y1, p1)], paired, resamples, np.random.default_rng(seed))
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) < resamples // 2:  # a one-class sample: AUCs undefined
        low = high = float("nan")
    else:
        tail = (1.0 - confidence) / 2 * 100
        low, high = (float(v) for v in np.percentile(diffs, [tail, 100 - tail]))
    return Comparison(
        metric=name,
        champion=value0,
        challenger=value1,
        difference=value1 - value0,
        low=low,
        high=high,
        champion_rows=len(y0),
        challenger_rows=len(y1),
        paired=paired,
        verdict=decide(name, low, high, margin),
    )


def compare_all(
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    paired: bool,
    margin: float = 0.0,
    resamples: int = 1000,
    seed: int | None = 0,
) -> dict[str, Comparison]:
    return {
        name: compare(name, champion, challenger, paired, margin, resamples, seed)
        for name in METRICS
    }
