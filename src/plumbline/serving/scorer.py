"""Scoring validated rows with a fitted model pipeline, fast.

One ``predict_proba`` call on the fitted sklearn Pipeline costs milliseconds even for one row;
nearly all of it is input checking inside ColumnTransformer and OneHotEncoder, not the model.
:class:`FastScorer` reads the fitted parameters out of the pipeline once and then computes the
same arithmetic directly on the rows:

* numeric columns: ``SimpleImputer`` (fills NaN with ``statistics_``), ``StandardScaler``
  (``x -= mean_``, ``x /= scale_``) or passthrough, in pipeline order;
* categorical columns: optional constant ``SimpleImputer``, then ``OneHotEncoder`` with
  ``handle_unknown="ignore"`` semantics (an unknown category gives all-zero indicators);
* the blocks side by side in ``ColumnTransformer`` order, then ``LogisticRegression``
  (``expit(X @ coef_.T + intercept_)``, the binary ``predict_proba``) or, for any other
  classifier, the classifier's own ``predict_proba`` on the transformed matrix.

A pipeline of any other shape is refused with :class:`Unsupported`, and :func:`compile_scorer`
then falls back to :class:`PipelineScorer` (the pipeline itself). Either way the scorer must
agree with ``plumbline.model.artifact.positive_proba`` on the smoke rows within 1e-9 before it is
used
(:func:`verify`), so a lean path that drifted from the pipeline is never served.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Protocol

import numpy as np

from plumbline.core.contract import Contract

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
PARITY_TOLERANCE = 1e-9


class Unsupported(Exception):
    """The pipeline has a step the fast path does not reproduce."""


class SmokeCheckFailed(Exception):
    """A loaded model failed its smoke prediction."""


class IncompatibleModel(SmokeCheckFailed):
    """The model needs input columns that the API does not accept."""


class Scorer(Protocol):
    kind: str

    def proba(self, rows: Sequence[Row]) -> np.ndarray:
        """Positive-class probability for each row (values in ``features`` order)."""
        ...


# --- the fast path ------------------------------------------------------------------------


@dataclass(frozen=True)
class _NumericBlock:
    positions: list[int]  # where the block's columns sit in a row tuple
    fill: np.ndarray | None  # SimpleImputer statistics_ (NaN -> value), per column
    steps: list[tuple[str, np.ndarray]]  # ("sub", mean_) / ("div", scale_) in order

    def transform(self, columns: list[Any], out: np.ndarray, start: int) -> int:
        n = out.shape[0]
        width = len(self.positions)
        x = np.empty((n, width), dtype=np.float64)
        for j, pos in enumerate(self.positions):
            x[:, j] = (
                np.fromiter(columns[pos], dtype=np.float64, count=n)
                if self.fill is None
                else np.asarray(columns[pos], dtype=np.float64)
            )
        if self.fill is not None:
            missing = np.isnan(x)
            if missing.any():
                x[missing] = np.broadcast_to(self.fill, x.shape)[missing]
        for op, values in self.steps:
            if op == "sub":
                x -= values
            else:
                x /= values
        out[:, start : start + width] = x
        return start + width


@dataclass(frozen=True)
class _CategoricalBlock:
    positions: list[int]
    fill: Any  # SimpleImputer(strategy="constant") fill value for missing cells, or None
    lookups: list[dict[Any, int]]  # category -> offset of its indicator within the block
    width: int

    def transform(self, columns: list[Any], out: np.ndarray, start: int) -> int:
        n = out.shape[0]
        rows = np.arange(n)
        for pos, lookup in zip(self.positions, self.lookups, strict=True):
            values = columns[pos]
            if self.fill is not None:
                values = tuple(self.fill if _is_missing(v) else v for v in values)
            codes = np.fromiter(map(lookup.get, values, repeat(-1, n)), dtype=np.intp, count=n)
            known = codes >= 0
            if known.all():
                out[rows, start + codes] = 1.0
            else:
                out[rows[known], start + codes[known]] = 1.0
        return start + self.width


class FastScorer:
    kind = "fast"

    def __init__(self, pipeline: Any, features: Sequence[str]) -> None:
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
            raise Unsupported("expected Pipeline([transformer, classifier])")
        ct, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
        if not isinstance(ct, ColumnTransformer):
            raise Unsupported("the first step is not a ColumnTransformer")
        if getattr(ct, "sparse_output_", False):
            raise Unsupported("sparse ColumnTransformer output")
        position = {name: i for i, name in enumerate(features)}
        self.row_width = len(features)
        names_in = [str(c) for c in getattr(ct, "feature_names_in_", [])]
        missing = sorted(set(names_in) - set(position))
        if missing:
            raise IncompatibleModel(f"the model needs columns the API does not accept: {missing}")
        self.blocks: list[_NumericBlock | _CategoricalBlock] = []
        width = 0
        for name, transformer, cols in ct.transformers_:
            if transformer == "drop" or (isinstance(cols, list | tuple) and len(cols) == 0):
                continue
            if name == "remainder" and transformer != "drop":
                raise Unsupported("a remainder that is not dropped")
            col_names = [names_in[c] if isinstance(c, int | np.integer) else str(c) for c in cols]
            positions = [position[c] for c in col_names]
            steps = (
                transformer.steps if isinstance(transformer, Pipeline) else [("step", transformer)]
            )
            block = _compile_block(positions, [s for _, s in steps])
            width += block.width if isinstance(block, _CategoricalBlock) else len(positions)
            self.blocks.append(block)
        self.width = width
        self.used = sorted({p for block in self.blocks for p in block.positions})
        self.estimator = estimator
        classes = [int(c) if isinstance(c, np.integer) else c for c in estimator.classes_]
        if 1 not in classes:
            raise Unsupported("the classifier has no class 1")
        self.positive = classes.index(1)
        self.linear: tuple[np.ndarray, np.ndarray] | None = None
        if isinstance(estimator, LogisticRegression) and len(classes) == 2:
            from scipy.special import expit  # what LogisticRegression.predict_proba uses

            self._expit = expit
            coef = np.asarray(estimator.coef_, dtype=np.float64)
            if coef.shape != (1, width):
                raise Unsupported(f"coef_ shape {coef.shape} does not fit {width} features")
            self.linear = (coef.T.copy(), np.asarray(estimator.intercept_, dtype=np.float64))
        elif not hasattr(estimator, "predict_proba"):
            raise Unsupported("the classifier has no predict_proba")

    def transform(self, rows: Sequence[Row]) -> np.ndarray:
        n = len(rows)
        columns: list[Any] = [None] * self.row_width
        for i in self.used:
            columns[i] = list(map(itemgetter(i), rows))
        out = np.zeros((n, self.width), dtype=np.float64)
        if n == 0:
            return out
        start = 0
        for block in self.blocks:
            start = block.transform(columns, out, start)
        return out

    def proba(self, rows: Sequence[Row]) -> np.ndarray:
        x = self.transform(rows)
        if self.linear is not None:
            coef_t, intercept = self.linear
            scores = (x @ coef_t + intercept).reshape(-1)
            p = self._expit(scores)
            return np.asarray(p if self.positive == 1 else 1.0 - p, dtype=np.float64)
        proba = self.estimator.predict_proba(x)
        return np.asarray(proba[:, self.positive], dtype=np.float64)


def _compile_block(positions: list[int], steps: list[Any]) -> _NumericBlock | _CategoricalBlock:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if steps and isinstance(steps[-1], OneHotEncoder):
        encoder = steps[-1]
        fill = None
        for step in steps[:-1]:
            if not (
                isinstance(step, SimpleImputer)
                and step.strategy == "constant"
                and not step.add_indicator
                and _is_missing(step.missing_values)
            ):
                raise Unsupported(f"categorical step {step!r}")
            fill = step.statistics_[0] if len(step.statistics_) else step.fill_value
            if any(v != fill for v in step.statistics_):
                raise Unsupported("per-column imputer fill values")
        if encoder.drop_idx_ is not None or getattr(encoder, "_infrequent_enabled", False):
            raise Unsupported("OneHotEncoder with drop or infrequent categories")
        if encoder.handle_unknown not in ("ignore", "infrequent_if_exist"):
            raise Unsupported("OneHotEncoder that raises on unknown categories")
        if np.dtype(encoder.dtype) != np.float64:
            raise Unsupported(f"OneHotEncoder dtype {encoder.dtype}")
        lookups: list[dict[Any, int]] = []
        offset = 0
        for cats in encoder.categories_:
            lookups.append({_plain(c): offset + i for i, c in enumerate(cats)})
            offset += len(cats)
        if len(lookups) != len(positions):
            raise Unsupported("encoder categories do not match the block's columns")
        return _CategoricalBlock(positions, fill, lookups, offset)

    fill_values: np.ndarray | None = None
    ops: list[tuple[str, np.ndarray]] = []
    for step in steps:
        if step == "passthrough" or step is None:
            continue
        if isinstance(step, SimpleImputer):
            if ops or fill_values is not None:
                raise Unsupported("an imputer after another numeric step")
            stats = np.asarray(step.statistics_, dtype=np.float64)
            if step.add_indicator or not _is_missing(step.missing_values) or np.isnan(stats).any():
                raise Unsupported(f"numeric imputer {step!r}")
            fill_values = stats
        elif isinstance(step, StandardScaler):
            if step.with_mean:
                ops.append(("sub", np.asarray(step.mean_, dtype=np.float64)))
            if step.with_std:
                ops.append(("div", np.asarray(step.scale_, dtype=np.float64)))
        else:
            raise Unsupported(f"numeric step {step!r}")
    return _NumericBlock(positions, fill_values, ops)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so dictionary lookups match validated JSON values."""
    return value.item() if isinstance(value, np.generic) else value


# --- the reference path -------------------------------------------------------------------


class PipelineScorer:
    """The fitted pipeline itself: slow per call, but whatever the pipeline's shape."""

    kind = "pipeline"

    def __init__(self, pipeline: Any, features: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.features = list(features)

    def proba(self, rows: Sequence[Row]) -> np.ndarray:
        from plumbline.model.artifact import positive_proba

        return positive_proba(self.pipeline, rows_frame(rows, self.features))


def rows_frame(rows: Sequence[Row], features: Sequence[str]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_records(list(rows), columns=list(features))


# --- smoke rows and verification ----------------------------------------------------------


def smoke_rows(contract: Contract, features: Sequence[str]) -> list[Row]:
    """Valid records that touch every category and each numeric column's range ends."""
    specs = [contract.columns[name] for name in features]
    count = max([3, *(len(s.categories or []) for s in specs)])
    rows: list[Row] = []
    for i in range(count):
        row: list[Any] = []
        for spec in specs:
            if spec.type == "category":
                cats = spec.categories or []
                row.append(cats[i % len(cats)])
            elif spec.is_numeric:
                lo = spec.min if spec.min is not None else -1.0
                hi = spec.max if spec.max is not None else 1.0
                value = (lo, hi, (lo + hi) / 2)[i % 3]
                row.append(int(value) if spec.type == "integer" else float(value))
            else:
                row.append("x")
        rows.append(tuple(row))
    if any(s.nullable for s in specs):
        rows.append(tuple(None if s.nullable else rows[0][j] for j, s in enumerate(specs)))
    return rows


def verify(scorer: Scorer, pipeline: Any, rows: Sequence[Row], features: Sequence[str]) -> None:
    """The smoke prediction: finite probabilities in [0, 1], equal to the pipeline's own."""
    from plumbline.model.artifact import positive_proba

    got = scorer.proba(rows)
    if got.shape != (len(rows),):
        raise SmokeCheckFailed(f"expected {len(rows)} probabilities, got shape {got.shape}")
    if not np.all(np.isfinite(got)) or got.min() < 0.0 or got.max() > 1.0:
        raise SmokeCheckFailed("probabilities are not finite values in [0, 1]")
    if scorer.kind != "pipeline":
        expected = positive_proba(pipeline, rows_frame(rows, features))
        worst = float(np.max(np.abs(expected - got)))
        if worst > PARITY_TOLERANCE:
            raise SmokeCheckFailed(f"fast path differs from the pipeline by {worst:.3g}")


def compile_scorer(pipeline: Any, contract: Contract, features: Sequence[str]) -> Scorer:
    """The fast scorer when it reproduces the pipeline, else the pipeline; smoke-checked."""
    rows = smoke_rows(contract, features)
    try:
        fast = FastScorer(pipeline, features)
        verify(fast, pipeline, rows, features)
        return fast
    except Unsupported as err:
        log.warning("fast scoring path unavailable (%s); scoring with the pipeline itself", err)
    except IncompatibleModel:
        raise
    except SmokeCheckFailed as err:
        log.warning("fast scoring path rejected (%s); scoring with the pipeline itself", err)
    slow = PipelineScorer(pipeline, features)
    verify(slow, pipeline, rows, features)
    return slow
