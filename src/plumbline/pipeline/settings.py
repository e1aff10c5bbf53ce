"""The pipeline's part of params.yaml: what the DVC stages read, and nothing else.

``dvc.yaml`` lists each stage's params keys; :class:`PipelineParams` is the view the stage
runners load. Serving, monitoring and retraining settings live in their own layers' settings
modules, which no stage imports.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import Field, ValidationError, model_validator

from plumbline.core.settings import ParamsView, StrictModel, load_view
from plumbline.model.settings import (
    FeaturizeConfig,
    HistGradientBoostingParams,
    LightGBMParams,
    LogisticRegressionParams,
    TrainConfig,
    XGBoostParams,
)

# Each estimator's hyperparameters: what tune.space.<estimator> may search.
HYPERPARAMETERS: dict[str, type[StrictModel]] = {
    "logistic_regression": LogisticRegressionParams,
    "hist_gradient_boosting": HistGradientBoostingParams,
    "xgboost": XGBoostParams,
    "lightgbm": LightGBMParams,
}


class ValidateConfig(StrictModel):
    max_bad_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Fail the stage when more than this share of rows is quarantined",
    )
    check_duplicates: bool = Field(
        default=True, description="Quarantine rows that repeat an earlier row exactly"
    )


class EvaluateConfig(StrictModel):
    threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Probability at or above which a row is predicted positive (precision, "
        "recall, F1, the confusion matrix)",
    )
    calibration_bins: int = Field(
        default=10, ge=2, description="Bins of the calibration curve and of the ECE"
    )


class Dimension(StrictModel):
    """One searched hyperparameter: a range ``{low, high}`` (integers for integer settings;
    ``log: true`` draws on a log scale, ``step`` on a grid) or a list ``{choices: [...]}``."""

    low: float | None = Field(default=None, description="Smallest value of a range")
    high: float | None = Field(default=None, description="Largest value of a range")
    log: bool = Field(default=False, description="Draw on a log scale (low must be above 0)")
    step: float | None = Field(default=None, gt=0, description="Grid step; null = continuous")
    choices: list[str | int | float | bool | None] | None = Field(
        default=None, min_length=1, description="The values tried, instead of a range"
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError("give a range (low, high) or choices, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log scale needs low above 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        return self


def is_integer_setting(model: type[StrictModel], name: str) -> bool:
    """Whether the setting holds whole numbers (``int`` or ``int | None``)."""
    annotation = model.model_fields[name].annotation
    if get_origin(annotation) in (Union, types.UnionType):
        return int in get_args(annotation)
    return annotation is int


class TuneConfig(StrictModel):
    trials: int = Field(
        default=0,
        ge=0,
        description="Optuna trials, run one after another (the study is a pure function of "
        "the data and the params); 0 = train with the hyperparameters as written",
    )
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = Field(
        default="roc_auc", description="What the trials are ranked by: its mean over the folds"
    )
    folds: int = Field(
        default=3,
        ge=2,
        le=20,
        description="Cross-validation folds of the training split: forward-chaining when the "
        "rows are time-ordered (each fold validates on rows after its training rows), "
        "stratified and shuffled with the seed otherwise",
    )
    seed: int = Field(default=0, description="The TPE sampler's seed, and the stratified folds'")
    prune: bool = Field(
        default=True,
        description="Stop a trial after a fold whose running mean is below the median of the "
        "earlier trials at that fold (deterministic: trials run one after another)",
    )
    space: dict[str, dict[str, Dimension]] = Field(
        default_factory=dict,
        description="Per estimator (its name under train:), the hyperparameters searched: "
        "each a range {low, high} with optional log: true or step, or {choices: [...]}; "
        "integer settings draw whole numbers; hyperparameters not named keep their value "
        "from train.<estimator>",
    )

    @model_validator(mode="after")
    def _known_hyperparameters(self) -> TuneConfig:
        for estimator, dims in self.space.items():
            model = HYPERPARAMETERS.get(estimator)
            if model is None:
                raise ValueError(
                    f"space.{estimator}: not an estimator (one of {', '.join(HYPERPARAMETERS)})"
                )
            for name, dim in dims.items():
                if name not in model.model_fields:
                    raise ValueError(
                        f"space.{estimator}.{name}: not a hyperparameter of {estimator} "
                        f"(one of {', '.join(model.model_fields)})"
                    )
                _check_values(model, estimator, name, dim)
        return self


def _check_values(model: type[StrictModel], estimator: str, name: str, dim: Dimension) -> None:
    """Every end of a range and every choice must be a valid value of the setting."""
    values: list[Any]
    if dim.choices is not None:
        values = list(dim.choices)
    else:
        assert dim.low is not None and dim.high is not None
        if is_integer_setting(model, name):
            if not (dim.low.is_integer() and dim.high.is_integer()):
                raise ValueError(f"space.{estimator}.{name}: an integer setting needs whole ends")
            values = [int(dim.low), int(dim.high)]
        else:
            values = [dim.low, dim.high]
    for value in values:
        try:
            model.model_validate({name: value})
        except ValidationError as err:
            reason = err.errors()[0]["msg"]
            raise ValueError(
                f"space.{estimator}.{name}: {value!r} is not valid: {reason}"
            ) from None


class PipelineParams(ParamsView):
    """params.yaml as the pipeline's stages read it."""

    validate_: ValidateConfig = Field(
        default=ValidateConfig(),
        alias="validate",
        description="The validate stage: the contract's checks, and how many failing rows "
        "(quarantined) fail the stage",
    )
    featurize: FeaturizeConfig = Field(
        default=FeaturizeConfig(),
        description="The featurize stage: the train/test split, the feature transformer and "
        "the training profile that drift is measured against",
    )
    tune: TuneConfig = Field(
        default=TuneConfig(),
        description="The tune stage: a seeded Optuna search of the estimator's "
        "hyperparameters by cross-validation on the training split",
    )
    train: TrainConfig = Field(
        default=TrainConfig(), description="The train stage: the estimator and its settings"
    )
    evaluate: EvaluateConfig = Field(
        default=EvaluateConfig(),
        description="The evaluate stage: the test split's metrics and plots (reports/)",
    )

    sections: ClassVar[tuple[str, ...]] = (
        *ParamsView.sections,
        "validate",
        "featurize",
        "tune",
        "train",
        "evaluate",
    )


def load_pipeline_params(path: Path | None = None) -> PipelineParams:
    return load_view(PipelineParams, path)
