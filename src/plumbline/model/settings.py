"""The model's settings: how features are built (``featurize:``) and which estimator is fitted
(``train:``). Training, batch and online prediction share them with the feature code."""

from __future__ import annotations

from typing import Literal

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


class TrainConfig(StrictModel):
    estimator: Literal["logistic_regression", "hist_gradient_boosting"] = Field(
        default="logistic_regression",
        description="The scikit-learn estimator fitted; its hyperparameters are the key "
        "of the same name",
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
    calibration: Literal["none", "sigmoid", "isotonic"] = Field(
        default="none",
        description="Wrap the estimator in scikit-learn's CalibratedClassifierCV (5-fold, "
        "time order kept) so that its probabilities can estimate live performance (CBPE)",
    )
