"""The model artifact: one skops file holding the fitted transformer and the estimator.

skops refuses to load any type it is not told to trust, unlike pickle. The list below is the
complete set of types our pipelines contain beyond primitives, containers and numpy arrays:
skops' own default list of every scikit-learn estimator is not used (see
:mod:`plumbline.core.skops_compat`), so anything else in a file is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

from plumbline.core import skops_compat
from plumbline.core.errors import PlumblineError
from plumbline.model.boosting import BoostedTreesClassifier
from plumbline.model.settings import TrainConfig

# What build_estimator, assemble and features.build_transformer put in a model file.
PIPELINE_TYPES: tuple[type, ...] = (
    Pipeline,
    ColumnTransformer,
    SimpleImputer,
    OneHotEncoder,
    StandardScaler,
    LogisticRegression,
    HistGradientBoostingClassifier,
    LabelEncoder,  # inside a fitted HistGradientBoostingClassifier (its classes)
    BoostedTreesClassifier,  # XGBoost / LightGBM: the library's own model bytes inside
)
TRUSTED_TYPES: list[str] = [
    *(f"{cls.__module__}.{cls.__qualname__}" for cls in PIPELINE_TYPES),
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    # train.calibration: CalibratedClassifierCV, its fitted folds and their calibrators (named,
    # not imported: most processes never load a calibrated model).
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
]


class ModelLoadError(PlumblineError):
    pass


@dataclass
class ModelMetadata:
    """What the artifact is; written beside it as models/model.json (a DVC output).

    Everything here is a pure function of the code, the data and the params, so the card hashes
    the same on every run. Run-specific facts (MLflow run, model URI, git commit, times) are in
    the untracked lineage record beside it (:mod:`plumbline.model.runrecord`) and in MLflow.
    """

    contract: str
    features: list[str]
    target: str
    positive_label: str | int | bool
    estimator: str
    data_hashes: dict[str, str] = field(default_factory=dict)
    # Distribution of the model's scores on the training rows: the baseline for score drift.
    score_profile: dict[str, Any] = field(default_factory=dict)
    # How the hyperparameters were chosen: the tune stage's reports/tune/best_params.json.
    tuning: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelMetadata:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        # Cards written before the run facts moved out carried mlflow_run_id etc.: ignore them.
        return cls(**{k: v for k, v in raw.items() if k in known})


def build_estimator(cfg: TrainConfig) -> Any:
    base = _base_estimator(cfg)
    if cfg.calibration == "none":
        return base
    from sklearn.calibration import CalibratedClassifierCV

    # Unshuffled folds: the same data gives the same model.
    return CalibratedClassifierCV(base, method=cfg.calibration, cv=5)


def _base_estimator(cfg: TrainConfig) -> Any:
    if cfg.estimator == "logistic_regression":
        p = cfg.logistic_regression
        return LogisticRegression(
            C=p.C, max_iter=p.max_iter, class_weight=p.class_weight, random_state=cfg.seed
        )
    if cfg.estimator in ("xgboost", "lightgbm"):
        p3 = cfg.xgboost if cfg.estimator == "xgboost" else cfg.lightgbm
        return BoostedTreesClassifier(
            library=cfg.estimator,
            params=p3.library_params(),
            n_estimators=p3.n_estimators,
            class_weight=p3.class_weight,
            seed=cfg.seed,
        )
    p2 = cfg.hist_gradient_boosting
    return HistGradientBoostingClassifier(
        learning_rate=p2.learning_rate,
        max_iter=p2.max_iter,
        max_leaf_nodes=p2.max_leaf_nodes,
        max_depth=p2.max_depth,
        min_samples_leaf=p2.min_samples_leaf,
        l2_regularization=p2.l2_regularization,
        class_weight=p2.class_weight,
        early_stopping=False,  # keep every run on the same data the same
        random_state=cfg.seed,
    )


def assemble(transformer: ColumnTransformer, estimator: Any) -> Pipeline:
    """The model: the fitted transformer followed by the fitted estimator."""
    return Pipeline([("features", transformer), ("classifier", estimator)])


def save_model(model: Pipeline, path: Path) -> None:
    """Byte-reproducible: the same fitted pipeline gives the same file (and DVC hash)."""
    skops_compat.dump(model, path)


def load_model(path: Path) -> Pipeline:
    try:
        untrusted = skops_compat.untrusted_types(path)
    except Exception as err:
        raise ModelLoadError(f"{path} is not a readable skops model: {err}") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ModelLoadError(f"{path} contains types that are not trusted: {refused}")
    try:
        model = skops_compat.load(path, TRUSTED_TYPES)
    except Exception as err:
        raise ModelLoadError(f"{path} could not be loaded: {err}") from None
    if not isinstance(model, Pipeline) or not hasattr(model, "predict_proba"):
        raise ModelLoadError(f"{path} does not hold a classification pipeline")
    return model


def transform_and_score(model: Pipeline, frame: pd.DataFrame) -> tuple[Any, np.ndarray]:
    """The rows through every step but the estimator, and the positive-class probability the
    pipeline gives them: for callers that need the transformed rows too, without a second
    transform."""
    transformed = model[:-1].transform(frame)
    return transformed, positive_proba(model[-1], transformed)


def positive_proba(model: Any, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Probability of the positive class (encoded as 1) for each row: of a pipeline on raw
    rows, or of its estimator on rows its transformer has already transformed."""
    proba = model.predict_proba(frame)
    classes = list(model.classes_)
    return np.asarray(proba[:, classes.index(1)], dtype=np.float64)
