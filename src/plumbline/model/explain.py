"""Per-decision additive explanations in raw contract features, in log-odds.

For one record the model's log-odds is split as ``base + sum(contributions)``, one contribution
per raw feature (the transformed columns a feature becomes, one-hot indicators or one scaled
column, are summed):

* logistic regression: exact. ``log_odds = b + w·x = (b + w·μ) + Σ_c w_c (x_c - μ_c)`` with μ the
  mean of the transformed training rows, stored on the estimator by train
  (:func:`attach_baseline`), so the baseline is "the average training record";
* histogram gradient boosting: exact path-dependent TreeSHAP (Lundberg et al. 2020, the
  ``tree_path_dependent`` algorithm of the ``shap`` package), computed here in numpy over all
  leaves of all trees at once (see :class:`TreeShap`); the base is the trees' expected output
  under the training covers;
* XGBoost and LightGBM: the library's own path-dependent TreeSHAP (``pred_contribs`` /
  ``pred_contrib``), through :class:`plumbline.model.boosting.BoostedTreesClassifier`.

The same code answers ``POST /predict?explain=K``, the ``plumbline explain`` batch command and
the global importance table of evaluate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from plumbline.model.boosting import BoostedTreesClassifier

BASELINE_ATTR = "plumbline_baseline_"  # mean transformed training row, on the LR estimator
SPACE = "log_odds"


class ExplainUnsupported(Exception):
    """The model has a shape these explanations do not cover."""


def attach_baseline(pipeline: Any, train_transformed: np.ndarray) -> None:
    """Store the training mean of the transformed columns on a logistic regression estimator.

    It is the reference point of LR explanations and travels inside the model artifact, so a
    server explains with exactly the baseline of the version it serves.
    """
    from sklearn.linear_model import LogisticRegression

    estimator = pipeline.steps[-1][1]
    if isinstance(estimator, LogisticRegression):
        mean = np.asarray(train_transformed, dtype=np.float64).mean(axis=0)
        setattr(estimator, BASELINE_ATTR, mean)


def column_groups(transformer: Any, features: Sequence[str]) -> np.ndarray:
    """For each transformed column, the index (in ``features``) of the raw feature it comes from."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    names_in = [str(c) for c in transformer.feature_names_in_]
    position = {name: i for i, name in enumerate(features)}
    width = sum(s.stop - s.start for s in transformer.output_indices_.values())
    owner = np.full(width, -1, dtype=np.intp)
    for name, step, cols in transformer.transformers_:
        out = transformer.output_indices_[name]
        if step == "drop" or out.stop == out.start:
            continue
        col_names = [names_in[c] if isinstance(c, int | np.integer) else str(c) for c in cols]
        last = step.steps[-1][1] if isinstance(step, Pipeline) else step
        if isinstance(last, OneHotEncoder):
            # _n_features_outs counts infrequent-category and dropped columns correctly.
            widths = list(getattr(last, "_n_features_outs", [len(c) for c in last.categories_]))
        else:
            widths = [1] * len(col_names)
        if sum(widths) != out.stop - out.start or len(widths) != len(col_names):
            raise ExplainUnsupported(f"cannot map the columns of transformer {name!r}")
        start = out.start
        for col, w in zip(col_names, widths, strict=True):
            owner[start : start + w] = position[col]
            start += w
    if (owner < 0).any():
        raise ExplainUnsupported("some transformed columns come from no known feature")
    return owner


@dataclass(frozen=True)
class Attribution:
    """Contributions of the raw features for a batch of rows (log-odds)."""

    base: float
    contributions: np.ndarray  # (rows, features), in ``features`` order
    log_odds: np.ndarray  # (rows,), the model's own decision function

    def top(self, k: int) -> list[tuple[list[int], float]]:
        """Per row: the k features of largest |contribution| (largest first) and the rest's sum."""
        order = np.argsort(-np.abs(self.contributions), axis=1, kind="stable")
        result = []
        for i in range(self.contributions.shape[0]):
            chosen = order[i, :k].tolist()
            rest = float(self.contributions[i].sum() - self.contributions[i, chosen].sum())
            result.append((chosen, rest))
        return result


class Explainer:
    """Explains a fitted ``Pipeline([ColumnTransformer, estimator])`` whose estimator is a
    logistic regression, a histogram gradient boosting or an XGBoost / LightGBM booster."""

    def __init__(self, pipeline: Any, features: Sequence[str]) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression

        from plumbline.model.boosting import BoostedTreesClassifier

        self.features = list(features)
        self.pipeline = pipeline
        self.transformer = pipeline.steps[0][1]
        estimator = pipeline.steps[-1][1]
        classes = [int(c) if isinstance(c, np.integer) else c for c in estimator.classes_]
        if classes != [0, 1]:
            raise ExplainUnsupported(f"expected classes [0, 1], got {classes}")
        self.owner = column_groups(self.transformer, self.features)
        # (columns, features) 0/1: contributions of columns summed to their raw feature.
        self.aggregate = np.zeros((len(self.owner), len(self.features)))
        self.aggregate[np.arange(len(self.owner)), self.owner] = 1.0
        self.linear: tuple[np.ndarray, float, np.ndarray] | None = None
        self.trees: TreeShap | BoostedTreesClassifier | None = None
        if isinstance(estimator, LogisticRegression):
            baseline = getattr(estimator, BASELINE_ATTR, None)
            if baseline is None:
                raise ExplainUnsupported("this model has no explanation baseline (retrain it)")
            coef = np.asarray(estimator.coef_, dtype=np.float64).reshape(-1)
            mean = np.asarray(baseline, dtype=np.float64)
            if coef.shape != mean.shape or coef.shape != self.owner.shape:
                raise ExplainUnsupported("the baseline does not fit the model's columns")
            self.linear = (coef, float(estimator.intercept_[0]), mean)
            self.kind = "linear"
        elif isinstance(estimator, HistGradientBoostingClassifier):
            self.trees = TreeShap(estimator)
            self.kind = "tree_shap"
        elif isinstance(estimator, BoostedTreesClassifier):
            if estimator.n_features_in_ != len(self.owner):
                raise ExplainUnsupported("the booster does not fit the model's columns")
            self.trees = estimator  # the library's own TreeSHAP
            self.kind = "tree_shap"
        else:
            raise ExplainUnsupported(f"no explanation for {type(estimator).__name__}")

    def transform_frame(self, frame: Any) -> np.ndarray:
        return np.asarray(self.transformer.transform(frame[self.features]), dtype=np.float64)

    def explain(self, x: np.ndarray) -> Attribution:
        """Attributions of transformed rows ``x`` (the ColumnTransformer's output)."""
        x = np.asarray(x, dtype=np.float64)
        if self.linear is not None:
            coef, intercept, mean = self.linear
            columns = (x - mean) * coef
            base = intercept + float(coef @ mean)
            log_odds = x @ coef + intercept
            return Attribution(base, columns @ self.aggregate, log_odds)
        assert self.trees is not None
        base, columns = self.trees.shap_values(x)
        return Attribution(base, columns @ self.aggregate, self.trees.raw_predict(x))

    def explain_frame(self, frame: Any) -> Attribution:
        return self.explain(self.transform_frame(frame))

    def baseline_values(self) -> dict[str, float]:
        """The raw value each numeric feature is compared with (training mean), where known."""
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        found: dict[str, float] = {}
        names_in = [str(c) for c in self.transformer.feature_names_in_]
        for _, step, cols in self.transformer.transformers_:
            steps = step.steps if isinstance(step, Pipeline) else [("", step)]
            for _, s in steps:
                if isinstance(s, StandardScaler) and s.with_mean:
                    for c, m in zip(cols, s.mean_, strict=True):
                        name = names_in[c] if isinstance(c, int | np.integer) else str(c)
                        found[name] = float(m)
        return found


def explanation_json(
    attribution: Attribution, rows: Sequence[Sequence[Any]], features: Sequence[str], k: int
) -> list[dict[str, Any]]:
    """The ``explanation`` object of each row: top-k contributions, the rest, the base."""
    out = []
    for i, (chosen, rest) in enumerate(attribution.top(k)):
        contributions = attribution.contributions[i]
        out.append(
            {
                "base": attribution.base,
                "contributions": [
                    {
                        "feature": features[j],
                        "value": _plain(rows[i][j]),
                        "contribution": float(contributions[j]),
                    }
                    for j in chosen
                ],
                "other": rest,
                "space": SPACE,
            }
        )
    return out


def explanation_table(model: Any, frame: pd.DataFrame, features: list[str], k: int) -> pd.DataFrame:
    """One row per record of ``frame``: its position, probability, log-odds, base, one
    ``contribution.<feature>`` column per feature and the top-``k`` explanation as JSON (what
    ``plumbline explain`` writes)."""
    import pandas as pd

    explainer = Explainer(model, features)
    attribution = explainer.explain_frame(frame)
    rows = list(frame[features].astype(object).itertuples(index=False, name=None))
    top = explanation_json(attribution, rows, features, k)
    out = pd.DataFrame(
        {
            "row": np.arange(len(frame), dtype=np.int64),
            "probability": 1.0 / (1.0 + np.exp(-attribution.log_odds)),
            "log_odds": attribution.log_odds,
            "base": np.full(len(frame), attribution.base),
        }
    )
    for j, name in enumerate(features):
        out[f"contribution.{name}"] = attribution.contributions[:, j]
    out["explanation"] = [json.dumps(e, default=str) for e in top]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- TreeSHAP ------------------------------------------------------------------------------


class TreeShap:
    """Exact path-dependent TreeSHAP for a binary HistGradientBoostingClassifier, vectorised.

    A leaf's output, seen as a game over the distinct features on its root path, is a product
    game: ``v(S) = value · Π_{j∈S} o_j · Π_{j∉S} z_j`` where ``z_j`` is the share of training
    rows (the covers) that follow the path's branches on feature j and ``o_j`` is 1 when the
    explained row follows them all, else 0. Its Shapley value for feature i is

        value · (o_i - z_i) · Σ_k k!(d-1-k)!/d! · e_k,    e_k = [t^k] Π_{j≠i} (z_j + o_j t),

    and a tree's SHAP values are the sums over its leaves (Shapley values are additive in the
    game). Paths are padded to one length with null players (``z = o = 1``), which change no
    other player's value, so every leaf of every tree is computed in the same array operations.
    """

    def __init__(self, estimator: Any) -> None:
        predictors = estimator._predictors  # one list of per-class trees per boosting iteration
        if any(len(per_class) != 1 for per_class in predictors):
            raise ExplainUnsupported("only binary gradient boosting is explained")
        self.baseline = float(np.asarray(estimator._baseline_prediction).reshape(-1)[0])
        self.n_columns = int(estimator.n_features_in_)
        leaves: list[tuple[float, list[tuple[int, float, bool, bool, float]]]] = []
        for per_class in predictors:
            nodes = per_class[0].nodes
            if np.any(nodes["is_categorical"]):
                raise ExplainUnsupported("native categorical splits are not explained")
            self._collect(nodes, 0, [], leaves)
        depth = max(1, max(len({c[0] for c in path}) for _, path in leaves))
        n_leaves = len(leaves)
        self.depth = depth
        self.values = np.array([v for v, _ in leaves], dtype=np.float64)
        self.slot_feature = np.full((n_leaves, depth), -1, dtype=np.intp)
        self.zero = np.ones((n_leaves, depth), dtype=np.float64)
        cond_slot: list[int] = []
        cond_feature: list[int] = []
        cond_threshold: list[float] = []
        cond_left: list[bool] = []
        cond_missing_left: list[bool] = []
        for leaf, (_, path) in enumerate(leaves):
            slots: dict[int, int] = {}
            for feature, threshold, left, missing_left, ratio in path:
                slot = slots.setdefault(feature, len(slots))
                self.slot_feature[leaf, slot] = feature
                self.zero[leaf, slot] *= ratio
                cond_slot.append(leaf * depth + slot)
                cond_feature.append(feature)
                cond_threshold.append(threshold)
                cond_left.append(left)
                cond_missing_left.append(missing_left)
        from scipy.sparse import csr_matrix

        n_cond = len(cond_slot)
        # (conditions, leaf slots): a row fails a slot when it fails any of its conditions.
        self.incidence = csr_matrix(
            (np.ones(n_cond), (np.arange(n_cond), np.array(cond_slot, dtype=np.intp))),
            shape=(n_cond, n_leaves * depth),
        )
        self.cond_feature = np.array(cond_feature, dtype=np.intp)
        self.cond_threshold = np.array(cond_threshold, dtype=np.float64)
        self.cond_left = np.array(cond_left, dtype=bool)
        self.cond_missing_left = np.array(cond_missing_left, dtype=bool)
        real = self.slot_feature.reshape(-1) >= 0
        # (leaf slots, columns) 0/1: a slot's value goes to its column.
        self.to_columns = csr_matrix(
            (
                np.ones(int(real.sum())),
                (np.flatnonzero(real), self.slot_feature.reshape(-1)[real]),
            ),
            shape=(n_leaves * depth, self.n_columns),
        )
        self.expected = self.baseline + float(self.values @ np.prod(self.zero, axis=1))
        # Leaves grouped by their number of distinct features d: each group's polynomials have
        # d + 1 coefficients instead of the deepest path's (the work grows with d squared).
        distinct = (self.slot_feature >= 0).sum(axis=1)
        self.groups = [
            (d, np.flatnonzero(distinct == d), _shapley_weights(d))
            for d in range(1, depth + 1)
            if np.any(distinct == d)
        ]

    @staticmethod
    def _collect(
        nodes: np.ndarray,
        index: int,
        path: list[tuple[int, float, bool, bool, float]],
        leaves: list[tuple[float, list[tuple[int, float, bool, bool, float]]]],
    ) -> None:
        node = nodes[index]
        if node["is_leaf"]:
            leaves.append((float(node["value"]), list(path)))
            return
        count = float(node["count"])
        feature = int(node["feature_idx"])
        threshold = float(node["num_threshold"])
        missing_left = bool(node["missing_go_to_left"])
        for child, left in ((int(node["left"]), True), (int(node["right"]), False)):
            ratio = float(nodes[child]["count"]) / count
            path.append((feature, threshold, left, missing_left, ratio))
            TreeShap._collect(nodes, child, path, leaves)
            path.pop()

    def raw_predict(self, x: np.ndarray) -> np.ndarray:
        """The log-odds: baseline plus the value of the leaf each tree sends the row to."""
        one = self._one_fractions(x)
        reached = np.all(one > 0.5, axis=2)  # (rows, leaves): exactly one leaf per tree
        return np.asarray(self.baseline + reached @ self.values, dtype=np.float64)

    def _one_fractions(self, x: np.ndarray) -> np.ndarray:
        values = x[:, self.cond_feature]
        nan = np.isnan(values)
        goes_left = np.where(nan, self.cond_missing_left, values <= self.cond_threshold)
        failed = (goes_left != self.cond_left).astype(np.float64)
        failures = np.asarray((self.incidence.T @ failed.T).T)  # (rows, leaf slots)
        return (failures == 0).astype(np.float64).reshape(x.shape[0], -1, self.depth)

    def shap_values(self, x: np.ndarray, chunk: int = 16) -> tuple[float, np.ndarray]:
        """(expected value, SHAP values per transformed column) for rows ``x``."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros((x.shape[0], self.n_columns))
        for start in range(0, x.shape[0], chunk):
            part = x[start : start + chunk]
            phi = self._phi(self._one_fractions(part))  # (rows, leaves, depth)
            out[start : start + chunk] = np.asarray(
                (self.to_columns.T @ phi.reshape(part.shape[0], -1).T).T
            )
        return self.expected, out

    def _phi(self, one: np.ndarray) -> np.ndarray:
        phi = np.zeros(one.shape)
        for d, leaves, weights in self.groups:
            part = _product_game_shapley(one[:, leaves, :d], self.zero[leaves, :d], weights)
            phi[:, leaves, :d] = part * self.values[None, leaves, None]
        return phi


def _shapley_weights(d: int) -> np.ndarray:
    """k!(d-1-k)!/d!: the Shapley weight of a coalition of k of the other d - 1 players."""
    return np.array(
        [math.factorial(k) * math.factorial(d - 1 - k) / math.factorial(d) for k in range(d)]
    )


def _product_game_shapley(one: np.ndarray, zero: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Shapley values of v(S) = Π_{j∈S} o_j Π_{j∉S} z_j for (rows, leaves, d) players."""
    d = one.shape[-1]
    zero = np.broadcast_to(zero, one.shape)
    # Coefficients of P(t) = Π_j (z_j + o_j t), lowest power first: (rows, leaves, d + 1).
    poly = np.zeros((*one.shape[:2], d + 1))
    poly[..., 0] = 1.0
    for j in range(d):
        z, o = zero[..., j : j + 1], one[..., j : j + 1]
        shifted = np.zeros_like(poly)
        shifted[..., 1:] = poly[..., :-1]
        poly = poly * z + shifted * o
    phi = np.empty(one.shape)
    quotient = np.empty((*one.shape[:2], d))
    for i in range(d):
        z, o = zero[..., i], one[..., i]
        # P / (z_i + o_i t): by z_i alone where o_i = 0, synthetic division from the top
        # (leading coefficient 1, |z| <= 1: stable) where o_i = 1.
        quotient[..., d - 1] = poly[..., d]
        for k in range(d - 1, 0, -1):
            quotient[..., k - 1] = poly[..., k] - z * quotient[..., k]
        by_one = quotient @ weights
        by_zero = (poly[..., :d] @ weights) / z
        phi[..., i] = (o - z) * np.where(o > 0.5, by_one, by_zero)
    return phi
