"""Settings: ``params.yaml`` validated by Pydantic, one part per consumer.

Each layer reads only its part of the file, through its own view: the pipeline's
(:class:`plumbline.pipeline.settings.PipelineParams`), promotion's, serving's, and the monitor's,
which is the whole file (:class:`plumbline.monitoring.settings.Params`). Each view extends the
one below it, so the whole file is also a valid pipeline view. A stage imports the pipeline's
settings code only: editing a serving or monitoring setting, its value or its model, does not
make DVC rerun the pipeline.

This module holds what every view shares: the error, the strict base model, the sections that
every layer reads (``data`` and ``mlflow``), and the loader. Unknown keys and wrong types stop
the run with a message that names the offending key, before any work is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from plumbline.core import yamlfile
from plumbline.core.errors import PlumblineError
from plumbline.core.paths import project_root

# Every top-level key of params.yaml. A view validates its own sections and ignores the
# others, but a key outside this list (a typo such as ``trian:``) is an error in every view.
SECTIONS = (
    "data",
    "validate",
    "featurize",
    "tune",
    "train",
    "evaluate",
    "mlflow",
    "gate",
    "serve",
    "monitor",
    "retrain",
    "promotion",
    "audit",
    "auth",
)


class ConfigError(PlumblineError):
    """params.yaml (or a file it names) is missing, malformed or invalid."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the sections every layer reads --------------------------------------------------------


class CsvSource(StrictModel):
    kind: Literal["csv"] = Field(default="csv", description="A delimited text file")
    path: Path = Field(description="The file, relative to the project root")
    sep: str = Field(default=",", description="Field separator")
    encoding: str = Field(default="utf-8", description="Text encoding of the file")


class SqlSource(StrictModel):
    kind: Literal["sql"] = Field(description="A database table or query, read through SQLAlchemy")
    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:///data/raw/rows.db")
    table: str | None = Field(default=None, description="Read this whole table; or give query")
    query: str | None = Field(
        default=None, description="Read the rows this SELECT returns; give exactly one of the two"
    )

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

    kind: Literal["http"] = Field(description="Records read over HTTP")
    url: str = Field(description="The endpoint, without the paging parameters")
    records_key: str | None = Field(
        default="records",
        description="Key of the list of records in each page's body; null = the body is the list",
    )
    page_param: str = Field(default="page", description="Query parameter of the page number")
    page_size_param: str = Field(
        default="page_size", description="Query parameter of the page size"
    )
    page_size: int = Field(default=1000, gt=0, description="Records asked for per page")
    first_page: int = Field(
        default=1, description="Number of the first page (APIs count from 0 or 1)"
    )
    max_pages: int = Field(
        default=100_000, gt=0, description="Still full pages after this many: the read fails"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout of each page's request")
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers sent with every request"
    )


Source = Annotated[CsvSource | SqlSource | HttpSource, Field(discriminator="kind")]


class DataConfig(StrictModel):
    contract: Path = Field(description="Data contract file (columns, types, ranges, target)")
    source: Source = Field(description="Where the raw rows come from; `kind` picks the reader")
    resample_rows: int | None = Field(
        default=None,
        gt=0,
        description="Benchmark switch: resample the source to this many rows (time order kept)",
    )
    resample_seed: int = Field(default=0, description="Random seed of that resampling")


class MlflowConfig(StrictModel):
    experiment: str = Field(
        default="plumbline", description="MLflow experiment that training and evaluation log to"
    )
    tracking_uri: str | None = Field(
        default=None,
        description="Defaults to SQLite inside the project; MLFLOW_TRACKING_URI overrides both",
    )
    model_name: str = Field(
        default="plumbline-classifier",
        description="Registered model name; its aliases (champion, challenger) pick what is served",
    )


# --- views and loading ---------------------------------------------------------------------


class ParamsView(BaseModel):
    """A consumer's part of params.yaml: its sections are strict, the others are ignored."""

    data: DataConfig = Field(
        description="The raw data: its source, and the contract its rows must satisfy"
    )
    mlflow: MlflowConfig = Field(
        default=MlflowConfig(),
        description="The MLflow tracking store, experiment and registered model",
    )

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    # Not a field: the sections this view checks (the rest of the file is some other layer's).
    sections: ClassVar[tuple[str, ...]] = ("data", "mlflow")

    def resolve(self, path: Path) -> Path:
        """Paths in params are relative to the project root, wherever the CLI runs from."""
        return path if path.is_absolute() else project_root() / path


View = TypeVar("View", bound=ParamsView)


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


def parse_params(raw: Any, view: type[View], source: Path = Path("params.yaml")) -> View:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    unknown = [str(key) for key in raw if key not in SECTIONS]
    if unknown:
        lines = [f"{source}: invalid configuration"]
        lines += [f"  {key}: unknown key" for key in unknown]
        raise ConfigError("\n".join(lines))
    try:
        return view.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, raw)) from None


def read_params(path: Path) -> Any:
    """The YAML document of a params file, or a ConfigError that says what is wrong."""
    try:
        return yamlfile.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as err:  # a directory, no permission, not text
        raise ConfigError(f"{path}: cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_view(view: type[View], path: Path | None = None) -> View:
    """``view``'s part of the params file (default: params.yaml at the project root)."""
    path = path or project_root() / "params.yaml"
    return parse_params(read_params(path), view, path)
