"""Promotion's part of params.yaml: the gate's thresholds (``gate:``) and those of the
automatic retrain's gate (``retrain.gate`` and ``retrain.comparison``), and governance's
sections (``promotion:``, ``audit:``, ``auth:``; models in :mod:`plumbline.governance.settings`),
which promotion is the first layer to read."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from plumbline.core.settings import StrictModel, load_view
from plumbline.governance.settings import AuditConfig, AuthConfig, PromotionConfig
from plumbline.pipeline.settings import PipelineParams


class FairnessLimits(StrictModel):
    """Largest disparity allowed in any contract slice (reports/fairness.json); None = no limit."""

    max_demographic_parity_difference: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Largest difference in selection (predicted positive) rate between the groups "
        "of a slice",
    )
    max_equalized_odds_difference: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Largest equalized odds difference (the larger of the true and false "
        "positive rate gaps between the groups of a slice)",
    )


class GateConfig(StrictModel):
    """What a candidate model must score on the test split to be promoted (``plumbline gate``)."""

    min_roc_auc: float = Field(default=0.70, ge=0.0, le=1.0, description="ROC AUC at least")
    min_pr_auc: float = Field(
        default=0.45, ge=0.0, le=1.0, description="PR AUC (average precision) at least"
    )
    max_brier: float = Field(default=0.21, ge=0.0, le=1.0, description="Brier score at most")
    max_regression: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="How much worse than the champion (re-scored on the same test split) the "
        "candidate may be on ROC AUC, PR AUC and Brier score, in absolute units",
    )
    fairness: FairnessLimits | None = Field(
        default=None, description="Optional per-slice disparity limits; off by default"
    )


class RetrainComparisonConfig(StrictModel):
    """The fair gate of automatic retrains (``plumbline gate --retrain``): the challenger and
    the re-scored champion on the same newest labelled rows (the window's test split, which
    neither trained on), compared with a paired bootstrap so that a lucky window cannot
    promote. Used instead of ``gate.max_regression``; the absolute floors still apply."""

    enabled: bool = Field(
        default=True,
        description="false: the offline rule judges retrains (no regression beyond "
        "gate.max_regression against the re-scored champion)",
    )
    primary_metric: Literal["roc_auc", "pr_auc", "brier"] = Field(
        default="roc_auc", description="The metric the challenger must improve"
    )
    min_improvement: float = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="The challenger must beat the champion on the primary metric by this much",
    )
    confidence: float = Field(
        default=0.90,
        gt=0.5,
        lt=1.0,
        description="... and the lower end of this paired-bootstrap interval of the difference "
        "must be above 0",
    )
    bootstrap_samples: int = Field(
        default=1000, ge=100, le=100_000, description="Bootstrap resamples of the rows"
    )
    tolerance: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="How much worse than the champion the challenger may be on the other "
        "metrics (ROC AUC, PR AUC, Brier score)",
    )
    seed: int = Field(default=0, description="Random seed of the bootstrap")


class RetrainGateConfig(StrictModel):
    """The gate part of ``retrain:``; the monitor's view adds the trigger and the window."""

    gate: GateConfig | None = Field(
        default=None, description="Gate thresholds for automatic retrains; null = the gate section"
    )
    comparison: RetrainComparisonConfig = Field(
        default=RetrainComparisonConfig(),
        description="The challenger against the re-scored champion",
    )

    model_config = ConfigDict(extra="ignore", frozen=True)


class PromotionParams(PipelineParams):
    """params.yaml as the gates, the registry and the promotion commands read it."""

    gate: GateConfig = Field(
        default=GateConfig(),
        description="The promotion gate: the bar a model must clear before `plumbline promote` "
        "moves the champion alias to it",
    )
    retrain: RetrainGateConfig = Field(
        default=RetrainGateConfig(), description="Automatic retraining: promotion reads its gate"
    )

    promotion: PromotionConfig = Field(
        default=PromotionConfig(),
        description="Governed promotion (docs/governance.md): approvals between a passing gate "
        "and the champion alias",
    )
    audit: AuditConfig = Field(
        default=AuditConfig(),
        description="The audit trail of every state change, and how long it is kept",
    )
    auth: AuthConfig = Field(
        default=AuthConfig(),
        description="Identities and roles for the privileged commands and routes",
    )

    sections: ClassVar[tuple[str, ...]] = (
        *PipelineParams.sections,
        "gate",
        "retrain",
        "promotion",
        "audit",
        "auth",
    )


def load_promotion_params(path: Path | None = None) -> PromotionParams:
    return load_view(PromotionParams, path)
