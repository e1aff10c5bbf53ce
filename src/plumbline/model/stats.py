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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
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


class _Arm:
    """One arm's outcomes and scores with what every resample shares: the sort order of the
    scores, the runs of equal scores in it and the per-row losses, computed once."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        self.y, self.p = y, p
        self.order = np.argsort(p, kind="mergesort")
        s = p[self.order]
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        self.y_sorted = y[self.order]
        self._sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def group_sums(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights of the positive and of the negative rows per run of equal scores, lowest
        score first (for the last ``w`` asked: ROC AUC and PR AUC share them)."""
        if self._sums is None or self._sums[0] is not w:
            ws = w[:, self.order]
            wy = ws * self.y_sorted
            pos = np.add.reduceat(wy, self.starts, axis=1)
            neg = np.add.reduceat(ws - wy, self.starts, axis=1)
            self._sums = w, pos, neg
        return self._sums[1], self._sums[2]

    @cached_property
    def log_losses(self) -> np.ndarray:
        q = np.clip(self.p, _EPS, 1 - _EPS)
        losses: np.ndarray = -(self.y * np.log(q) + (1 - self.y) * np.log(1 - q))
        return losses

    @cached_property
    def squared_errors(self) -> np.ndarray:
        errors: np.ndarray = (self.p - self.y) ** 2
        return errors


# Resample weights are draw counts, so the per-run sums and their running totals are exact
# integers: the same whatever order the rows are added in.


def _roc_auc(arm: _Arm, w: np.ndarray) -> np.ndarray:
    pos, neg = arm.group_sums(w)
    below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result: np.ndarray = (pos * (below + 0.5 * neg)).sum(axis=1) / total
    return result


def _pr_auc(arm: _Arm, w: np.ndarray) -> np.ndarray:
    pos, neg = (np.ascontiguousarray(a[:, ::-1]) for a in arm.group_sums(w))  # highest first
    tp = np.cumsum(pos, axis=1)
    fp = np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        result: np.ndarray = (pos * precision).sum(axis=1) / pos.sum(axis=1)
    return result


def _log_loss(arm: _Arm, w: np.ndarray) -> np.ndarray:
    result: np.ndarray = (w @ arm.log_losses) / w.sum(axis=1)
    return result


def _brier(arm: _Arm, w: np.ndarray) -> np.ndarray:
    result: np.ndarray = (w @ arm.squared_errors) / w.sum(axis=1)
    return result


_FUNCTIONS: dict[str, Callable[[_Arm, np.ndarray], np.ndarray]] = {
    "roc_auc": _roc_auc,
    "pr_auc": _pr_auc,
    "log_loss": _log_loss,
    "brier": _brier,
}


def metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """One metric on all rows (weights of one)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return float(_FUNCTIONS[name](_Arm(y, p), np.ones((1, len(y))))[0])


def _resample_weights(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` bootstrap resamples of ``n`` rows as draw counts per row (count x n)."""
    draws = rng.integers(0, n, size=(count, n)) + (np.arange(count) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=count * n).reshape(count, n).astype(np.float64)


def _bootstrap(
    names: Sequence[str],
    arms: tuple[_Arm, _Arm],
    paired: bool,
    resamples: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Bootstrap values of challenger - champion per metric (arms: champion, challenger). All
    metrics are computed from the same resamples, so each equals its own run with this seed."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    arm0, arm1 = arms
    done = 0
    while done < resamples:
        count = min(_CHUNK, resamples - done)
        w0 = _resample_weights(rng, len(arm0.y), count)
        w1 = w0 if paired else _resample_weights(rng, len(arm1.y), count)
        for name in names:
            fn = _FUNCTIONS[name]
            out[name].append(fn(arm1, w1) - fn(arm0, w0))
        done += count
    return {name: np.concatenate(parts) for name, parts in out.items()}


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
    one = compare_many({name: margin}, champion, challenger, paired, resamples, seed, confidence)
    return one[name]


def compare_many(
    margins: Mapping[str, float],
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    paired: bool,
    resamples: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Comparison]:
    """:func:`compare` for each metric in ``margins`` (name: its margin), sharing the
    resamples and the sorting: each result equals ``compare`` of that metric alone."""
    y0, p0 = (np.asarray(a, dtype=np.float64) for a in champion)
    y1, p1 = (np.asarray(a, dtype=np.float64) for a in challenger)
    if paired and (len(y0) != len(y1) or not np.array_equal(y0, y1)):
        raise ValueError("a paired comparison needs the same rows (and outcomes) in both arms")
    arms = _Arm(y0, p0), _Arm(y1, p1)
    ones0, ones1 = np.ones((1, len(y0))), np.ones((1, len(y1)))
    names = list(margins)
    diffs_by_name = _bootstrap(names, arms, paired, resamples, np.random.default_rng(seed))
    result: dict[str, Comparison] = {}
    for name in names:
        fn = _FUNCTIONS[name]
        value0, value1 = float(fn(arms[0], ones0)[0]), float(fn(arms[1], ones1)[0])
        diffs = diffs_by_name[name]
        diffs = diffs[np.isfinite(diffs)]
        if len(diffs) < resamples // 2:  # a one-class sample: AUCs undefined
            low = high = float("nan")
        else:
            tail = (1.0 - confidence) / 2 * 100
            low, high = (float(v) for v in np.percentile(diffs, [tail, 100 - tail]))
        result[name] = Comparison(
            metric=name,
            champion=value0,
            challenger=value1,
            difference=value1 - value0,
            low=low,
            high=high,
            champion_rows=len(y0),
            challenger_rows=len(y1),
            paired=paired,
            verdict=decide(name, low, high, margins[name]),
        )
    return result
