"""XGBoost and LightGBM as scikit-learn classifiers that skops can store without pickle.

:class:`BoostedTreesClassifier` trains with the library's own API (``xgboost.train`` /
``lightgbm.train``) and keeps the fitted booster as the library's own model format: XGBoost's
JSON, LightGBM's text model. Those bytes are the whole fitted state (with the classes and the
column count), so the skops file holds plain bytes and the class is the one trusted type it
adds; loading rebuilds the booster with the library's parser, never with pickle. The library
wrappers (``xgboost.XGBClassifier``, ``lightgbm.LGBMClassifier``) are not used: skops would have
to trust their internals, which change between releases.

Training is deterministic: one thread, fixed seeds, LightGBM's ``deterministic`` mode, so the
same rows give the same model bytes and DVC hash. Prediction also runs on one thread: each
server worker is a process of its own.

Explanations are the library's own path-dependent TreeSHAP (``pred_contribs`` /
``pred_contrib``). LightGBM computes them in float64: they add up to the log-odds within
1e-12. XGBoost computes in float32, so its contributions add up to its margin only within
float32 rounding (a few 1e-6 on 200 trees); :meth:`BoostedTreesClassifier.shap_values` checks
that the residual is no more than that (a wrong column mapping misses by orders of magnitude
more) and spreads it over the row's contributions in proportion to their size, so that
base + contributions equals the served log-odds as for the other estimators.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

Library = Literal["xgboost", "lightgbm"]
# The float32 residual allowed before a model's contributions count as wrong: per unit of
# log-odds (float32 keeps 7 digits; 200 trees' sums lose about one).
FLOAT32_RESIDUAL = 1e-4


class BoostingResidualError(ValueError):
    """The library's contributions do not add up to its own margin."""


class BoostedTreesClassifier(ClassifierMixin, BaseEstimator):
    """A binary XGBoost or LightGBM booster on an already transformed numeric matrix.

    ``params`` are the library's own training parameters (its names); the objective, the
    thread count, the seed and the determinism switches are set here, not by the caller.
    ``class_weight="balanced"`` weighs each row by ``n / (2 * n_class)``, as scikit-learn does.
    """

    # Caches, never part of the stored state: the parsed booster and the expected value.
    _booster: Any = None
    _expected: float | None = None

    def __init__(
        self,
        library: Library = "xgboost",
        params: dict[str, Any] | None = None,
        n_estimators: int = 200,
        class_weight: Literal["balanced"] | None = None,
        seed: int = 0,
    ) -> None:
        self.library = library
        self.params = params
        self.n_estimators = n_estimators
        self.class_weight = class_weight
        self.seed = seed

    # --- fitting -------------------------------------------------------------------------

    def fit(self, x: Any, y: Any) -> BoostedTreesClassifier:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y)
        classes = np.unique(y)
        if not np.array_equal(classes, [0, 1]):
            raise ValueError(f"expected the classes 0 and 1, got {classes.tolist()}")
        weight = None
        if self.class_weight == "balanced":
            counts = np.bincount(y.astype(np.intp), minlength=2)
            weight = (len(y) / (2.0 * counts))[y.astype(np.intp)]
        if self.library == "xgboost":
            model = _train_xgboost(x, y, weight, self._params(), self.n_estimators, self.seed)
        elif self.library == "lightgbm":
            model = _train_lightgbm(x, y, weight, self._params(), self.n_estimators, self.seed)
        else:
            raise ValueError(f"unknown library {self.library!r}")
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = int(x.shape[1])
        self.model_ = model
        # Predict with the booster parsed from the stored bytes, as a loaded model will.
        self._booster = None
        self._expected = None
        return self

    def _params(self) -> dict[str, Any]:
        return dict(self.params or {})

    # --- storage: the model bytes are the state -------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_booster", None)
        state.pop("_expected", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import importlib.util

        library = state.get("library", "")
        # A process without the library would load the file and fail at the first request:
        # refuse the model at load instead, saying what to install.
        if importlib.util.find_spec(str(library)) is None:
            raise ModuleNotFoundError(
                f"this model is a {library} booster: install plumbline's `boosting` extra "
                "(pip install 'plumbline[boosting]')"
            )
        super().__setstate__(state)
        self._booster = None
        self._expected = None

    def booster(self) -> Any:
        """The library's booster, parsed from the stored model bytes on first use."""
        if getattr(self, "_booster", None) is None:
            if self.library == "xgboost":
                import xgboost

                booster = xgboost.Booster(params={"nthread": 1})
                booster.load_model(bytearray(self.model_))
                self._booster = booster
            else:
                import lightgbm

                self._booster = lightgbm.Booster(model_str=self.model_.decode("utf-8"))
        return self._booster

    # --- prediction ----------------------------------------------------------------------

    def decision_function(self, x: Any) -> np.ndarray:
        """The log-odds of class 1 (the booster's raw margin)."""
        x = self._matrix(x)
        booster = self.booster()
        if self.library == "xgboost":
            margin = booster.inplace_predict(x, predict_type="margin")
        else:
            margin = booster.predict(x, raw_score=True, num_threads=1)
        return np.asarray(margin, dtype=np.float64).reshape(-1)

    def predict_proba(self, x: Any) -> np.ndarray:
        from scipy.special import expit

        p = expit(self.decision_function(x))
        return np.column_stack([1.0 - p, p])

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.decision_function(x) >= 0.0, dtype=np.int64)

    def _matrix(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} columns, got shape {x.shape}")
        return x

    # --- explanations (the interface of plumbline.model.explain.TreeShap) ----------------

    def raw_predict(self, x: np.ndarray) -> np.ndarray:
        return self.decision_function(x)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """The library's TreeSHAP values: (rows, columns + 1), the expected value last."""
        x = self._matrix(x)
        booster = self.booster()
        if self.library == "xgboost":
            import xgboost

            out = booster.predict(xgboost.DMatrix(x, nthread=1), pred_contribs=True)
        else:
            out = booster.predict(x, pred_contrib=True, num_threads=1)
        return np.asarray(out, dtype=np.float64).reshape(x.shape[0], self.n_features_in_ + 1)

    def expected_value(self) -> float:
        """The base of the explanations: the trees' expected output (the same for every row)."""
        if self._expected is None:
            self._expected = float(self.contributions(np.zeros((1, self.n_features_in_)))[0, -1])
        return self._expected

    def shap_values(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(expected value, SHAP values per column) adding up to :meth:`decision_function`."""
        x = self._matrix(x)
        base = self.expected_value()
        if x.shape[0] == 0:
            return base, np.zeros((0, self.n_features_in_))
        raw = self.contributions(x)
        phi = raw[:, :-1]
        margin = self.decision_function(x)
        residual = margin - (base + phi.sum(axis=1))
        allowed = FLOAT32_RESIDUAL * (1.0 + np.abs(margin))
        if np.any(np.abs(raw[:, -1] - base) > allowed) or np.any(np.abs(residual) > allowed):
            worst = float(np.max(np.abs(residual)))
            raise BoostingResidualError(
                f"{self.library} contributions miss its margin by {worst:.3g}"
            )
        size = np.abs(phi)
        total = size.sum(axis=1, keepdims=True)
        share = np.divide(size, total, out=np.zeros_like(size), where=total > 0)
        return base, phi + residual[:, None] * share


def requirements(model: Any) -> list[str]:
    """The booster library a fitted pipeline needs to load, pinned as installed (for the
    MLflow model's environment); none for the scikit-learn estimators."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    inner = [c.estimator for c in getattr(estimator, "calibrated_classifiers_", [])]
    libraries = sorted(
        {e.library for e in [estimator, *inner] if isinstance(e, BoostedTreesClassifier)}
    )
    pinned = []
    for library in libraries:
        for dist in packages_distributions().get(library, [library]):
            try:
                pinned.append(f"{dist}=={version(dist)}")
            except PackageNotFoundError:
                continue
    return pinned


def _train_xgboost(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    params: dict[str, Any],
    rounds: int,
    seed: int,
) -> bytes:
    import xgboost

    fixed = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "nthread": 1,
        "seed": seed,
        "verbosity": 0,
    }
    data = xgboost.DMatrix(x, label=y, weight=weight, nthread=1)
    booster = xgboost.train({**params, **fixed}, data, num_boost_round=rounds)
    return bytes(booster.save_raw(raw_format="json"))


def _train_lightgbm(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    params: dict[str, Any],
    rounds: int,
    seed: int,
) -> bytes:
    import lightgbm

    fixed = {
        "objective": "binary",
        "num_threads": 1,
        "deterministic": True,
        "force_col_wise": True,
        "seed": seed,
        "verbosity": -1,
    }
    merged = {**params, **fixed}
    data = lightgbm.Dataset(x, label=y, weight=weight, params=merged, free_raw_data=True)
    booster = lightgbm.train(merged, data, num_boost_round=rounds)
    return booster.model_to_string().encode("utf-8")
