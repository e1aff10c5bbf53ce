"""The monitor's part of params.yaml (``monitor:`` and ``retrain:``), and the whole file.

The monitor reads every section (it serves drift of the served model, retrains through the
pipeline and gates the result), so its view, :class:`Params`, is params.yaml whole: strict at
the top level too. ``plumbline check-config`` validates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import ConfigDict, Field, model_validator

from plumbline.core.settings import StrictModel, load_view
from plumbline.promotion.settings import RetrainGateConfig
from plumbline.serving.settings import ServingParams


class DriftConfig(StrictModel):
    """When a feature (or the model's score) counts as drifted: both conditions must hold."""

    psi: float = Field(default=0.2, gt=0.0, description="PSI above this is a large shift")
    p_value: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="... and the two-sample / chi-squared test below this",
    )
    min_rows: int = Field(default=200, ge=10, description="No verdict on fewer live rows")


class EstimateConfig(StrictModel):
    """Estimated live performance from the scores alone (CBPE), before outcomes arrive."""

    enabled: bool = Field(default=True, description="false: no estimated performance")
    max_ece: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="No estimate for a version whose expected calibration error on its test "
        "split is above this (CBPE needs calibrated probabilities)",
    )
    min_rows: int = Field(default=200, ge=10, description="Fewer logged rows: no estimate")


class ConsoleLink(StrictModel):
    name: str = Field(min_length=1, description="What the link says")
    url: str = Field(min_length=1, description="Where it goes, as people's browsers reach it")


class ConsoleConfig(StrictModel):
    """The console (``GET /console`` on the monitor): one page for the people who run the model
    (docs/console.md)."""

    enabled: bool = Field(default=True, description="Serve the console at /console")
    prometheus_url: str | None = Field(
        default="http://127.0.0.1:9090",
        description="Prometheus the charts query (PLUMBLINE_PROMETHEUS_URL overrides); "
        "null = no charts over time",
    )
    alertmanager_url: str | None = Field(
        default="http://127.0.0.1:9093",
        description="Alertmanager whose firing alerts are listed (PLUMBLINE_ALERTMANAGER_URL "
        "overrides); null = none",
    )
    links: list[ConsoleLink] = Field(
        default_factory=lambda: [
            ConsoleLink(name="MLflow", url="http://127.0.0.1:5000"),
            ConsoleLink(name="Grafana", url="http://127.0.0.1:3000"),
            ConsoleLink(name="Prometheus", url="http://127.0.0.1:9090"),
            ConsoleLink(name="Alertmanager", url="http://127.0.0.1:9093"),
        ],
        description="Links out to the tools beside the console, as people's browsers reach "
        "them (name and url each)",
    )
    window_h: float = Field(
        default=24.0, gt=0, le=24 * 31, description="Hours of history the charts show"
    )
    refresh_s: float = Field(
        default=15.0, ge=2, description="The page refreshes its sections this often"
    )
    timeline: int = Field(
        default=50, ge=5, le=1000, description="Audit records shown in the timeline"
    )
    verify_interval_s: float = Field(
        default=300.0,
        ge=5,
        description="The whole audit chain is re-verified in the background this often",
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="A sign-in lasts this long"
    )


class MonitorConfig(StrictModel):
    """``plumbline monitor``: drift and live performance from the prediction log + feedback."""

    port: int = Field(
        default=8001,
        ge=1,
        le=65535,
        description="HTTP port of the monitor (/metrics, /alerts, ...)",
    )
    state_dir: Path = Field(
        default=Path("logs/monitor"),
        description="SQLite store (predictions, feedback, retrains), lock, "
        "retraining work directories",
    )
    prediction_log_dir: Path | None = Field(
        default=None,
        description="Finished predictions-*.parquet files; null = serve.prediction_log.dir",
    )
    interval_s: float = Field(
        default=15.0, gt=0, description="Read new log files and recompute everything this often"
    )
    window_rows: int = Field(
        default=2000, ge=10, description="Newest logged rows compared with the reference profile"
    )
    label_window_rows: int = Field(
        default=2000,
        ge=10,
        description="Newest labelled rows of the serving version used "
        "for live ROC AUC, PR AUC and positive rate",
    )
    min_labelled_rows: int = Field(
        default=200, ge=10, description="Fewer labelled rows: no live metrics exported"
    )
    retention_rows: int = Field(
        default=1_000_000, ge=1000, description="Logged rows kept in the store (oldest deleted)"
    )
    report_dir: Path = Field(
        default=Path("reports/drift"), description="Where `plumbline drift-report` writes"
    )
    token_env: str = Field(
        default="PLUMBLINE_MONITOR_TOKEN",
        description="If this variable is set, POST /alerts and /feedback need it as bearer token",
    )
    drift: DriftConfig = Field(default=DriftConfig(), description="The drift verdicts")
    estimate: EstimateConfig = Field(
        default=EstimateConfig(),
        description="The estimated ROC AUC, precision and recall the monitor exports",
    )
    console: ConsoleConfig = Field(
        default=ConsoleConfig(), description="The console page at /console"
    )


class RetrainWindowConfig(StrictModel):
    """The training window: the newest labelled live rows after the newest history rows.

    featurize splits the window in time order, so its test split (the gate's) is the newest
    labelled data; history is capped at ``max_history_per_live`` rows per live row so that live
    rows also reach the training split.
    """

    live_rows: int = Field(default=3000, ge=1, description="Newest labelled live rows")
    history_rows: int = Field(
        default=5000,
        ge=0,
        description="Newest rows of the project's validated data "
        "(data/interim/valid.parquet) placed before them",
    )
    max_history_per_live: float = Field(
        default=1.0,
        ge=0.0,
        description="History rows per live row at most, so that live rows reach the training "
        "split too, not only the test split",
    )
    min_live_rows: int = Field(
        default=2000, ge=1, description="Fewer labelled live rows: no retrain"
    )

    @model_validator(mode="after")
    def _minimum_fits(self) -> RetrainWindowConfig:
        if self.min_live_rows > self.live_rows:
            raise ValueError("min_live_rows must not exceed live_rows")
        return self


class RetrainConfig(RetrainGateConfig):
    """What the monitor does when Alertmanager posts a firing alert to POST /alerts."""

    enabled: bool = Field(
        default=True,
        description="false: no retrain starts, from an alert or from `plumbline retrain`",
    )
    trigger_alerts: list[str] = Field(
        default_factory=lambda: [
            "PlumblineDataDrift",
            "PlumblinePredictionDrift",
            "PlumblineLivePerformanceDrop",
            "PlumblineEstimatedPerformanceDrop",
        ],
        description="Firing alerts (by alertname) that start a retrain",
    )
    cooldown_s: float = Field(
        default=1800.0, ge=0, description="No new retrain this long after the last one ended"
    )
    min_new_labels: int = Field(
        default=2000,
        ge=0,
        description="Labelled rows newer than the last completed "
        "retrain's window needed for another one",
    )
    timeout_s: float = Field(default=1800.0, gt=0, description="Whole retrain, all stages")
    keep_runs: int = Field(default=5, ge=1, description="Work directories kept")
    window: RetrainWindowConfig = Field(
        default=RetrainWindowConfig(), description="The rows a retrain trains and is gated on"
    )

    model_config = ConfigDict(extra="forbid", frozen=True)


class Params(ServingParams):
    """params.yaml, every section."""

    monitor: MonitorConfig = Field(
        default=MonitorConfig(),
        description="The monitor (docs/monitoring.md): drift of the newest logged rows against "
        "the serving model's training profile, and live performance from delayed labels",
    )
    retrain: RetrainConfig = Field(
        default=RetrainConfig(),
        description="Automatic retraining, started by a firing alert (POST /alerts from "
        "Alertmanager) or by `plumbline retrain`",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    sections: ClassVar[tuple[str, ...]] = (*ServingParams.sections, "monitor")


def load_params(path: Path | None = None) -> Params:
    """The whole params file (default: params.yaml at the project root)."""
    return load_view(Params, path)
