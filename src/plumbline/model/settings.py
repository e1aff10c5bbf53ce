"""The model's settings: how features are built (``featurize:``) and which estimator is fitted
(``train:``). Training, batch and online prediction share them with the feature code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from plumbline.core.settings import StrictModel


class FeaturizeConfig(StrictModel):
    train_fraction: float = Field(default=0.8, gt=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    exclude_columns: list[str] = Field(
        default_factory=list, description="Contract columns never used as model features"
    )
    onehot_min_frequency: int | None = Field(default=None, ge=1)
    scale_numeric: bool = True
    profile_quantiles: int = Field(default=10, ge=2, le=100)
    profile_sample_size: int = Field(
        default=2000, ge=0, description="Training values kept per numeric feature for KS tests"
    )
    split_seed: int = Field(default=0, description="Used only when rows are not time-ordered")

    @model_validator(mode="after")
    def _fractions_fit(self) -> FeaturizeConfig:
        if self.train_fraction + self.test_fraction > 1.0 + 1e-9:
            raise ValueError("train_fraction + test_fraction must be at most 1")
        return self


class LogisticRegressionParams(StrictModel):
    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=1000, gt=0)
    class_weight: Literal["balanced"] | None = None


class HistGradientBoostingParams(StrictModel):
    learning_rate: float = Field(default=0.1, gt=0)
    max_iter: int = Field(default=200, gt=0)
    max_leaf_nodes: int = Field(default=31, ge=2)
    max_depth: int | None = Field(default=None, ge=1)
    min_samples_leaf: int = Field(default=20, ge=1)
    l2_regularization: float = Field(default=0.0, ge=0)
    class_weight: Literal["balanced"] | None = None


class TrainConfig(StrictModel):
    estimator: Literal["logistic_regression", "hist_gradient_boosting"] = "logistic_regression"
    seed: int = 42
    logistic_regression: LogisticRegressionParams = LogisticRegressionParams()
    hist_gradient_boosting: HistGradientBoostingParams = HistGradientBoostingParams()
    calibration: Literal["none", "sigmoid", "isotonic"] = Field(
        default="none",
        description="Wrap the estimator in scikit-learn's CalibratedClassifierCV (5-fold, "
        "time order kept) so that its probabilities can estimate live performance (CBPE)",
    )
