"""The pipeline's part of params.yaml: what the DVC stages read, and nothing else.

``dvc.yaml`` lists each stage's params keys; :class:`PipelineParams` is the view the stage
runners load. Serving, monitoring and retraining settings live in their own layers' settings
modules, which no stage imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from plumbline.core.settings import ParamsView, StrictModel, load_view
from plumbline.model.settings import FeaturizeConfig, TrainConfig


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
        "train",
        "evaluate",
    )


def load_pipeline_params(path: Path | None = None) -> PipelineParams:
    return load_view(PipelineParams, path)
