"""The model's settings: how features are built (``featurize:``) and which estimator is fitted
(``train:``). Training, batch and online prediction share them with the feature code."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from plumbline.core.settings import StrictModel


class FeaturizeConfig(StrictModel):
    train_fraction: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="Share of the valid rows, the oldest, that train"
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Share of the valid rows, the newest, that test; train_fraction + "
        "test_fraction is at most 1 (rows between the two are unused)",
    )
    exclude_columns: list[str] = Field(
        default_factory=list, description="Contract columns never used as model features"
    )
    onehot_min_frequency: int | None = Field(
        default=None,
        ge=1,
        description="Categories seen fewer times in training share one infrequent indicator; "
        "null = one indicator per category",
    )
    scale_numeric: bool = Field(
        default=True, description="Standardise numeric features (false: passed through as they are)"
    )
    profile_quantiles: int = Field(
        default=10,
        ge=2,
        le=100,
        description="Quantile bins per numeric feature in the training profile (drift's PSI)",
    )
    profile_sample_size: int = Field(
        default=2000, ge=0, description="Training values kept per numeric feature for KS tests"
    )
    split_seed: int = Field(
        default=0,
        description="Shuffles rows that are not time-ordered (else unused for the split); "
        "also draws the profile's sample",
    )

    @model_validator(mode="after")
    def _fractions_fit(self) -> FeaturizeConfig:
        if self.train_fraction + self.test_fraction > 1.0 + 1e-9:
            raise ValueError("train_fraction + test_fraction must be at most 1")
        return self


class LogisticRegressionParams(StrictModel):
    C: float = Field(default=1.0, gt=0, description="Inverse of the L2 regularisation strength")
    max_iter: int = Field(default=1000, gt=0, description="Solver iterations at most")
    class_weight: Literal["balanced"] | None = Field(
        default=None, description="balanced: weigh classes by inverse frequency; null = equal"
    )


class HistGradientBoostingParams(StrictModel):
    learning_rate: float = Field(default=0.1, gt=0, description="Shrinkage of each tree")
    max_iter: int = Field(default=200, gt=0, description="Boosting iterations (trees)")
    max_leaf_nodes: int = Field(default=31, ge=2, description="Leaves per tree at most")
    max_depth: int | None = Field(
        default=None, ge=1, description="Depth of each tree at most; null = no limit"
    )
    min_samples_leaf: int = Field(default=20, ge=1, description="Training rows per leaf at least")
    l2_regularization: float = Field(default=0.0, ge=0, description="L2 penalty on the leaf values")
    class_weight: Literal["balanced"] | None = Field(
        default=None, description="balanced: weigh classes by inverse frequency; null = equal"
    )


class XGBoostParams(StrictModel):
    n_estimators: int = Field(default=200, gt=0, description="Boosting rounds (trees)")
    learning_rate: float = Field(default=0.1, gt=0, description="Shrinkage of each tree (eta)")
    max_depth: int = Field(default=6, ge=1, description="Depth of each tree at most")
    min_child_weight: float = Field(
        default=1.0, ge=0, description="Hessian sum per leaf at least (rows, roughly)"
    )
    subsample: float = Field(
        default=1.0, gt=0, le=1, description="Share of the rows each tree is grown on (seeded)"
    )
    colsample_bytree: float = Field(
        default=1.0, gt=0, le=1, description="Share of the columns each tree may split on"
    )
    reg_lambda: float = Field(default=1.0, ge=0, description="L2 penalty on the leaf values")
    reg_alpha: float = Field(default=0.0, ge=0, description="L1 penalty on the leaf values")
    max_bin: int = Field(default=256, ge=2, description="Histogram bins per column")
    class_weight: Literal["balanced"] | None = Field(
        default=None, description="balanced: weigh classes by inverse frequency; null = equal"
    )

    def library_params(self) -> dict[str, Any]:
        """The training parameters under XGBoost's own names."""
        return {
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "alpha": self.reg_alpha,
            "max_bin": self.max_bin,
        }


class LightGBMParams(StrictModel):
    n_estimators: int = Field(default=200, gt=0, description="Boosting rounds (trees)")
    learning_rate: float = Field(default=0.1, gt=0, description="Shrinkage of each tree")
    num_leaves: int = Field(default=31, ge=2, description="Leaves per tree at most")
    max_depth: int | None = Field(
        default=None, ge=1, description="Depth of each tree at most; null = no limit"
    )
    min_child_samples: int = Field(default=20, ge=1, description="Training rows per leaf at least")
    subsample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of the rows each tree is grown on (seeded bagging; 1 = all)",
    )
    colsample_bytree: float = Field(
        default=1.0, gt=0, le=1, description="Share of the columns each tree may split on"
    )
    reg_lambda: float = Field(default=0.0, ge=0, description="L2 penalty on the leaf values")
    reg_alpha: float = Field(default=0.0, ge=0, description="L1 penalty on the leaf values")
    max_bin: int = Field(default=255, ge=2, description="Histogram bins per column")
    class_weight: Literal["balanced"] | None = Field(
        default=None, description="balanced: weigh classes by inverse frequency; null = equal"
    )

    def library_params(self) -> dict[str, Any]:
        """The training parameters under LightGBM's own names."""
        return {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": -1 if self.max_depth is None else self.max_depth,
            "min_data_in_leaf": self.min_child_samples,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1.0 else 0,
            "feature_fraction": self.colsample_bytree,
            "lambda_l2": self.reg_lambda,
            "lambda_l1": self.reg_alpha,
            "max_bin": self.max_bin,
        }


Estimator = Literal["logistic_regression", "hist_gradient_boosting", "xgboost", "lightgbm"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)


class TrainConfig(StrictModel):
    estimator: Estimator = Field(
        default="logistic_regression",
        description="The estimator fitted (xgboost and lightgbm need the `boosting` extra); "
        "its hyperparameters are the key of the same name",
    )
    seed: int = Field(
        default=42, description="Random state of the estimator and of the score profile's sample"
    )
    logistic_regression: LogisticRegressionParams = Field(
        default=LogisticRegressionParams(),
        description="LogisticRegression's hyperparameters (estimator: logistic_regression)",
    )
    hist_gradient_boosting: HistGradientBoostingParams = Field(
        default=HistGradientBoostingParams(),
        description="HistGradientBoostingClassifier's hyperparameters "
        "(estimator: hist_gradient_boosting)",
    )
    xgboost: XGBoostParams = Field(
        default=XGBoostParams(), description="XGBoost's hyperparameters (estimator: xgboost)"
    )
    lightgbm: LightGBMParams = Field(
        default=LightGBMParams(), description="LightGBM's hyperparameters (estimator: lightgbm)"
    )
    calibration: Literal["none", "sigmoid", "isotonic"] = Field(
        default="none",
        description="Wrap the estimator in scikit-learn's CalibratedClassifierCV (5-fold, "
        "time order kept) so that its probabilities can estimate live performance (CBPE)",
    )

    def with_hyperparameters(self, values: dict[str, Any]) -> TrainConfig:
        """These settings with the chosen estimator's hyperparameters updated (tuning's best),
        validated like the file's own."""
        current = getattr(self, self.estimator).model_dump()
        merged = getattr(self, self.estimator).model_validate({**current, **values})
        return self.model_copy(update={self.estimator: merged})
