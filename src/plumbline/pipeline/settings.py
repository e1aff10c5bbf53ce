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
    max_bad_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    check_duplicates: bool = True


class EvaluateConfig(StrictModel):
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    calibration_bins: int = Field(default=10, ge=2)


class PipelineParams(ParamsView):
    """params.yaml as the pipeline's stages read it."""

    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    featurize: FeaturizeConfig = FeaturizeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    sections: ClassVar[tuple[str, ...]] = (
        *ParamsView.sections,
        "validate",
        "featurize",
        "train",
        "evaluate",
    )


def load_pipeline_params(path: Path | None = None) -> PipelineParams:
    return load_view(PipelineParams, path)
