"""The one configuration model: ``params.yaml`` validated by Pydantic.

Every stage reads its settings from here. Unknown keys and wrong types stop the run
with a message that names the offending key, before any work is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from plumbline.core import yamlfile
from plumbline.core.errors import PlumblineError
from plumbline.core.paths import project_root


class ConfigError(PlumblineError):
    """params.yaml (or a file it names) is missing, malformed or invalid."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data sources -------------------------------------------------------------------------


class CsvSource(StrictModel):
    kind: Literal["csv"] = "csv"
    path: Path
    sep: str = ","
    encoding: str = "utf-8"


class SqlSource(StrictModel):
    kind: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:///data/raw/rows.db")
    table: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self


class HttpSource(StrictModel):
    """A JSON endpoint that returns records page by page.

    Page ``n`` is requested as ``url?{page_param}=n&{page_size_param}=page_size``; the
    records are the list under ``records_key`` (or the body itself when it is a list).
    Paging stops at the first page with fewer than ``page_size`` records.
    """

    kind: Literal["http"]
    url: str
    records_key: str | None = "records"
    page_param: str = "page"
    page_size_param: str = "page_size"
    page_size: int = Field(default=1000, gt=0)
    first_page: int = 1
    max_pages: int = Field(default=100_000, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


Source = Annotated[CsvSource | SqlSource | HttpSource, Field(discriminator="kind")]


class DataConfig(StrictModel):
    contract: Path = Field(description="Data contract file (columns, types, ranges, target)")
    source: Source
    resample_rows: int | None = Field(
        default=None,
        gt=0,
        description="Benchmark switch: resample the source to this many rows (time order kept)",
    )
    resample_seed: int = 0


# --- stages -------------------------------------------------------------------------------


class ValidateConfig(StrictModel):
    max_bad_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    check_duplicates: bool = True


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


class EvaluateConfig(StrictModel):
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    calibration_bins: int = Field(default=10, ge=2)


class MlflowConfig(StrictModel):
    experiment: str = "plumbline"
    tracking_uri: str | None = Field(
        default=None,
        description="Defaults to SQLite inside the project; MLFLOW_TRACKING_URI overrides both",
    )
    model_name: str = "plumbline-classifier"


class FairnessLimits(StrictModel):
    """Largest disparity allowed in any contract slice (reports/fairness.json); None = no limit."""

    max_demographic_parity_difference: float | None = Field(default=None, ge=0.0, le=1.0)
    max_equalized_odds_difference: float | None = Field(default=None, ge=0.0, le=1.0)


class GateConfig(StrictModel):
    """What a candidate model must score on the test split to be promoted (``plumbline gate``)."""

    min_roc_auc: float = Field(default=0.70, ge=0.0, le=1.0)
    min_pr_auc: float = Field(default=0.45, ge=0.0, le=1.0)
    max_brier: float = Field(default=0.21, ge=0.0, le=1.0)
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


class PredictionLogConfig(StrictModel):
    """Where the server appends every request's inputs and outputs (Parquet, rotated)."""

    enabled: bool = True
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
    decide: RolloutDecideConfig = RolloutDecideConfig()

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
    request_timeout_s: float = Field(default=30.0, gt=0)
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
    prediction_log: PredictionLogConfig = PredictionLogConfig()
    rollout: RolloutConfig = RolloutConfig()

    @model_validator(mode="after")
    def _backoff_in_order(self) -> ServeConfig:
        if self.restart_backoff_max_s < self.restart_backoff_s:
            raise ValueError("restart_backoff_max_s must be at least restart_backoff_s")
        return self


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

    enabled: bool = True
    max_ece: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="No estimate for a version whose expected calibration error on its test "
        "split is above this (CBPE needs calibrated probabilities)",
    )
    min_rows: int = Field(default=200, ge=10, description="Fewer logged rows: no estimate")


class MonitorConfig(StrictModel):
    """``plumbline monitor``: drift and live performance from the prediction log + feedback."""

    port: int = Field(default=8001, ge=1, le=65535)
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
    drift: DriftConfig = DriftConfig()
    estimate: EstimateConfig = EstimateConfig()


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
    max_history_per_live: float = Field(default=1.0, ge=0.0)
    min_live_rows: int = Field(
        default=2000, ge=1, description="Fewer labelled live rows: no retrain"
    )

    @model_validator(mode="after")
    def _minimum_fits(self) -> RetrainWindowConfig:
        if self.min_live_rows > self.live_rows:
            raise ValueError("min_live_rows must not exceed live_rows")
        return self


class RetrainComparisonConfig(StrictModel):
    """The fair gate of automatic retrains (``plumbline gate --retrain``): the challenger and
    the re-scored champion on the same newest labelled rows (the window's test split, which
    neither trained on), compared with a paired bootstrap so that a lucky window cannot
    promote. Used instead of ``gate.max_regression``; the absolute floors still apply."""

    enabled: bool = True
    primary_metric: Literal["roc_auc", "pr_auc", "brier"] = "roc_auc"
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
    bootstrap_samples: int = Field(default=1000, ge=100, le=100_000)
    tolerance: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="How much worse than the champion the challenger may be on the other "
        "metrics (ROC AUC, PR AUC, Brier score)",
    )
    seed: int = 0


class RetrainConfig(StrictModel):
    """What the monitor does when Alertmanager posts a firing alert to POST /alerts."""

    enabled: bool = True
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
    window: RetrainWindowConfig = RetrainWindowConfig()
    gate: GateConfig | None = Field(
        default=None, description="Gate thresholds for automatic retrains; null = the gate section"
    )
    comparison: RetrainComparisonConfig = RetrainComparisonConfig()


class Params(StrictModel):
    data: DataConfig
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    featurize: FeaturizeConfig = FeaturizeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    mlflow: MlflowConfig = MlflowConfig()
    gate: GateConfig = GateConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    retrain: RetrainConfig = RetrainConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def resolve(self, path: Path) -> Path:
        """Paths in params are relative to the project root, wherever the CLI runs from."""
        return path if path.is_absolute() else project_root() / path


def _key_path(loc: tuple[Any, ...], raw: Any) -> str:
    """The key as written in the file: without Pydantic's union tags (``data.source.csv.sep``
    is ``data.source.sep``) and validator names."""
    parts: list[str] = []
    node = raw
    for part in loc:
        if str(part).startswith("function-"):
            continue
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # the discriminator tag of a tagged union, not a key in the file
        parts.append("validate" if part == "validate_" else str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(parts)


def _format_errors(err: ValidationError, source: Path, raw: Any) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = _key_path(e["loc"], raw) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif isinstance(e.get("input"), dict | list):
            lines.append(f"  {key}: {e['msg']}")  # a whole section: too long to repeat
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: Any, source: Path = Path("params.yaml")) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, raw)) from None


def load_params(path: Path | None = None) -> Params:
    path = path or project_root() / "params.yaml"
    try:
        raw = yamlfile.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as err:  # a directory, no permission, not text
        raise ConfigError(f"{path}: cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, path)
