"""Serving's part of params.yaml: the ``serve:`` section (the server, its prediction log, and
the rollout of a challenger beside the champion)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from plumbline.core.settings import StrictModel, load_view
from plumbline.promotion.settings import PromotionParams


class PredictionLogConfig(StrictModel):
    """Where the server appends every request's inputs and outputs (Parquet, rotated)."""

    enabled: bool = Field(
        default=True, description="false: no log (no drift or feedback for this server)"
    )
    dir: Path = Field(
        default=Path("logs/predictions"),
        description="Finished files are <dir>/predictions-*.parquet",
    )
    rotate_rows: int = Field(default=100_000, gt=0, description="Start a new file after N rows")
    rotate_s: float = Field(default=3600.0, gt=0, description="... or after this many seconds")
    flush_s: float = Field(default=1.0, gt=0, description="Write buffered rows this often")
    max_files: int = Field(default=500, ge=1, description="Delete the oldest files beyond this")
    max_pending_rows: int = Field(
        default=1_000_000,
        gt=0,
        description="Rows waiting for the writer; beyond this new rows are dropped and counted",
    )
    retry_max_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause between retries of a failing write (the pause doubles "
        "from flush_s)",
    )


class RolloutDecideConfig(StrictModel):
    """When the monitor calls a rollout (``plumbline rollout status`` prints the same verdict)."""

    min_labelled_rows: int = Field(
        default=500, ge=20, description="No verdict on fewer labelled rows per arm"
    )
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = Field(
        default="roc_auc", description="The metric whose verdict promotes or ends a rollout"
    )
    margin: float = Field(
        default=0.01,
        ge=0.0,
        description="The challenger must beat the champion on decide.metric by more than this "
        "(the whole interval of the difference beyond it) to count as better; above 0 so that "
        "an equal model is not promoted on noise",
    )
    alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Error rate of the whole rollout's verdicts, spent over max_looks looks "
        "(Bonferroni: each look's interval has confidence 1 - alpha / max_looks)",
    )
    max_looks: int = Field(
        default=4,
        ge=1,
        description="Planned looks: when the labelled rows per arm first reach "
        "min_labelled_rows, then each doubling of it; no verdict in between or after",
    )
    auto: bool = Field(
        default=False,
        description="The monitor promotes a better challenger and ends the rollout of a worse "
        "one (or one breaking the limits below) by itself",
    )
    window_rows: int = Field(
        default=5000, ge=20, description="Newest labelled rows of the rollout the verdict uses"
    )
    bootstrap: int = Field(default=1000, ge=100, description="Bootstrap resamples")
    max_error_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="A challenger failing (load or scoring) on more than this share of its "
        "requests ends the rollout",
    )
    max_latency_ratio: float = Field(
        default=1.5,
        gt=1.0,
        description="... or whose mean scoring time is more than this times the champion's",
    )
    min_requests: int = Field(
        default=200, ge=1, description="Requests per arm before the error and latency limits apply"
    )

    @model_validator(mode="after")
    def _window_holds_a_verdict(self) -> RolloutDecideConfig:
        if self.window_rows < self.min_labelled_rows:
            raise ValueError(
                f"window_rows ({self.window_rows}) < min_labelled_rows "
                f"({self.min_labelled_rows}): no verdict could ever be reached"
            )
        return self

    @property
    def confidence(self) -> float:
        """Each look's two-sided interval confidence."""
        return 1.0 - self.alpha / self.max_looks

    def look_rows(self) -> list[int]:
        """Labelled rows per arm at which the planned looks happen."""
        return [self.min_labelled_rows * 2**k for k in range(self.max_looks)]


class RolloutConfig(StrictModel):
    """A second model (``challenger_alias``) beside the champion: shadow or canary traffic."""

    mode: Literal["off", "shadow", "canary"] = Field(
        default="off",
        description="off: champion only; shadow: both score every request, the champion "
        "answers; canary: canary_fraction of requests answered by the challenger",
    )
    challenger_alias: str = Field(
        default="challenger", description="Alias of the second model (models:/<name>@<alias>)"
    )
    canary_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Share of requests the challenger answers"
    )
    sticky_key: str | None = Field(
        default=None,
        description="A record field, X-Request-ID or another header name: the same key always "
        "lands on the same arm; null = each request drawn at random",
    )
    server_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where the monitor and `plumbline rollout` reach the server's /admin/rollout",
    )
    shadow_budget_ms: float = Field(
        default=200.0,
        gt=0,
        description="Shadow mode: a challenger scoring call longer than this counts as over budget",
    )
    shadow_budget_calls: int = Field(
        default=5,
        ge=1,
        description="... this many over-budget calls in a row stop shadow scoring for "
        "shadow_cooloff_s",
    )
    shadow_cooloff_s: float = Field(
        default=30.0, gt=0, description="How long shadow scoring stays off after that"
    )
    shadow_queue_batches: int = Field(
        default=64,
        ge=1,
        description="Shadow batches waiting for the challenger; a batch beyond them is logged "
        "without its shadow score",
    )
    decide: RolloutDecideConfig = Field(
        default=RolloutDecideConfig(), description="The rollout's verdict"
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false: that is what the user meant.
        return "off" if value is False else value


class ServeConfig(StrictModel):
    """The online prediction server (serve/): model source, API limits, batching, reload."""

    model_alias: str = Field(
        default="champion", description="Serve models:/<mlflow.model_name>@<alias>"
    )
    fallback_artifact: Path | None = Field(
        default=Path("models/model.skops"),
        description="Loaded when the registry cannot be reached; null = stay not-ready instead",
    )
    poll_interval_s: float = Field(
        default=10.0, gt=0, description="How often to check whether the alias moved"
    )
    threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="label = 1 when the probability is at least this"
    )
    unknown_category: Literal["reject", "allow"] = Field(
        default="reject",
        description="reject: 422 for a category the contract does not list; allow: score it "
        "as the model's encoder does (all indicators 0)",
    )
    max_records: int = Field(default=10_000, ge=1, description="Records per request")
    max_body_bytes: int = Field(
        default=16 * 2**20, ge=1024, description="Larger bodies are refused (413) before parsing"
    )
    max_batch_size: int = Field(
        default=64, ge=1, description="Requests scored together in one call"
    )
    batch_timeout_s: float = Field(
        default=0.002,
        ge=0.0,
        le=1.0,
        description="Longest wait for more requests once a batch has started under load; "
        "a lone request is never held back",
    )
    api_servers: int = Field(default=2, ge=1, description="HTTP processes")
    inference_workers: int = Field(default=1, ge=1, description="Scoring processes")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="A request not scored within this gets 504"
    )
    metrics: bool = Field(default=True, description="Prometheus /metrics and instrumentation")
    admin_token_env: str = Field(
        default="PLUMBLINE_ADMIN_TOKEN",
        description="Environment variable holding the bearer token of POST /admin/reload",
    )
    predict_auth: bool = Field(
        default=False,
        description="Require a bearer token on POST /predict (the token: predict_token_env)",
    )
    predict_token_env: str = Field(
        default="PLUMBLINE_PREDICT_TOKEN",
        description="Environment variable holding the bearer token of POST /predict",
    )
    restart_backoff_s: float = Field(
        default=1.0,
        gt=0,
        description="Wait before restarting a process that crashed again soon after its "
        "start; doubles with each further crash",
    )
    restart_backoff_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait before restarting a crash-looping process"
    )
    restart_stable_s: float = Field(
        default=30.0,
        gt=0,
        description="A process that ran this long before dying is restarted at once",
    )
    prediction_log: PredictionLogConfig = Field(
        default=PredictionLogConfig(), description="The prediction log, which the monitor reads"
    )
    rollout: RolloutConfig = Field(
        default=RolloutConfig(), description="The rollout of a challenger (docs/rollout.md)"
    )

    @model_validator(mode="after")
    def _backoff_in_order(self) -> ServeConfig:
        if self.restart_backoff_max_s < self.restart_backoff_s:
            raise ValueError("restart_backoff_max_s must be at least restart_backoff_s")
        return self


class ServingParams(PromotionParams):
    """params.yaml as the prediction server reads it."""

    serve: ServeConfig = Field(
        default=ServeConfig(),
        description="The prediction server (docs/serving.md); no pipeline stage reads it",
    )

    sections: ClassVar[tuple[str, ...]] = (*PromotionParams.sections, "serve")


def load_serving_params(path: Path | None = None) -> ServingParams:
    return load_view(ServingParams, path)
