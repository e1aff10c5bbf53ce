"""The one configuration model: ``params.yaml`` validated by Pydantic.

Every stage reads its settings from here. Unknown keys and wrong types stop the run
with a message that names the offending key, before any work is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from plumbline.paths import project_root


class ConfigError(Exception):
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


class Params(StrictModel):
    data: DataConfig
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    featurize: FeaturizeConfig = FeaturizeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    mlflow: MlflowConfig = MlflowConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def resolve(self, path: Path) -> Path:
        """Paths in params are relative to the project root, wherever the CLI runs from."""
        return path if path.is_absolute() else project_root() / path


def _format_errors(err: ValidationError, source: Path) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        key = key.replace("validate_", "validate")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: Any, source: Path = Path("params.yaml")) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(path: Path | None = None) -> Params:
    path = path or project_root() / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, path)
