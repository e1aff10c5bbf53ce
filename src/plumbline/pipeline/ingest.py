"""Ingest: read the configured source (CSV, SQL or paged HTTP JSON) into typed Parquet.

The output follows the contract's Arrow schema exactly. Cells that do not parse as their
column's type are kept (as null plus the original text in ``_type_errors``) so that validate
can quarantine them with a reason; nothing is dropped here.

:func:`ingest` types the rows a source gave (:class:`Raw`) in memory; :func:`run`, the stage,
reads the source (:func:`read`) and writes the Parquet file and ``reports/ingest.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from plumbline.core.artifacts import write_json, write_parquet
from plumbline.core.contract import SOURCE_ROW, Contract, ContractError
from plumbline.core.errors import PlumblineError
from plumbline.core.paths import Layout
from plumbline.core.settings import CsvSource, DataConfig, HttpSource, ParamsView, SqlSource


class SourceError(PlumblineError):
    """A source could not be read; the message names it."""


@dataclass
class IngestRecord:
    source: dict[str, Any]
    rows: int
    columns: list[str]
    dropped_columns: list[str]
    cells_failing_type: int
    content_sha256: str
    source_sha256: str | None = None
    resampled_from: int | None = None
    contract: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def describe_source(source: CsvSource | SqlSource | HttpSource) -> dict[str, Any]:
    """What the record says about a source; passwords in SQL URLs are masked."""
    info = source.model_dump(mode="json")
    if isinstance(source, SqlSource):
        from sqlalchemy.engine import make_url

        try:
            info["url"] = make_url(source.url).render_as_string(hide_password=True)
        except Exception:
            info["url"] = "<unparseable url>"
    if isinstance(source, HttpSource):
        info.pop("headers", None)  # may carry credentials
    return info


def source_label(source: CsvSource | SqlSource | HttpSource, root: Path) -> str:
    """How messages name a source."""
    if isinstance(source, CsvSource):
        return f"CSV source {source.path if source.path.is_absolute() else root / source.path}"
    if isinstance(source, SqlSource):
        what = f"table {source.table!r}" if source.table is not None else "query"
        return f"SQL source {describe_source(source)['url']} ({what})"
    return f"HTTP source {source.url}"


# --- readers ------------------------------------------------------------------------------


def read_csv(source: CsvSource, contract: Contract, root: Path) -> pd.DataFrame:
    import pyarrow.csv as pacsv

    path = source.path if source.path.is_absolute() else root / source.path
    read_opts = pacsv.ReadOptions(encoding=source.encoding, block_size=1 << 24)
    parse_opts = pacsv.ParseOptions(delimiter=source.sep)
    null_opts = {"null_values": list(contract.null_tokens), "strings_can_be_null": True}
    if not path.is_file():
        raise SourceError(f"CSV source {path} cannot be read: file not found")
    # Fast path: let Arrow parse the contract types directly. If any cell does not parse,
    # read everything as text and let the contract coerce cell by cell, recording failures.
    arrow_types = contract.arrow_schema(with_bookkeeping=False)
    typed = {name: arrow_types.field(name).type for name in contract.columns}
    try:
        table = pacsv.read_csv(
            path,
            read_options=read_opts,
            parse_options=parse_opts,
            convert_options=pacsv.ConvertOptions(column_types=typed, **null_opts),
        )
    except pa.ArrowInvalid as err:
        if "CSV conversion error" not in str(err) and "In CSV column" not in str(err):
            raise SourceError(f"CSV source {path} cannot be read: {err}") from None
        table = _read_csv_as_text(path, read_opts, parse_opts, null_opts)
    except (OSError, UnicodeDecodeError, LookupError) as err:
        raise SourceError(f"CSV source {path} cannot be read: {err}") from None
    return table.to_pandas()


def _read_csv_as_text(path: Path, read_opts: Any, parse_opts: Any, null_opts: dict) -> pa.Table:
    import pyarrow.csv as pacsv

    names = _csv_header(path, read_opts, parse_opts)
    try:
        return pacsv.read_csv(
            path,
            read_options=read_opts,
            parse_options=parse_opts,
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, **null_opts
            ),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise SourceError(f"CSV source {path} cannot be read: {err}") from None


def _csv_header(path: Path, read_opts: Any, parse_opts: Any) -> list[str]:
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=read_opts.encoding, block_size=1 << 16),
        parse_options=parse_opts,
        convert_options=pacsv.ConvertOptions(column_types={}),
    )
    return list(reader.schema.names)


def read_sql(source: SqlSource, root: Path) -> pd.DataFrame:
    import sqlalchemy as sa

    label = describe_source(source)["url"]
    try:
        url = sa.engine.make_url(source.url)
    except Exception as err:
        raise SourceError(f"SQL source {label} cannot be opened: {err}") from None
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and "uri" not in url.query
    ):
        # SQLite would create a missing file (and report "no such table"); a relative path is
        # relative to the project root, like every path in params.yaml.
        path = Path(url.database or "")
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise SourceError(
                f"SQL source {label} cannot be opened: database file {path} not found"
            )
        url = url.set(database=str(path))
    try:
        engine = sa.create_engine(url)
    except Exception as err:
        raise SourceError(f"SQL source {label} cannot be opened: {err}") from None
    if source.table is not None:
        statement: Any = sa.select(sa.text("*")).select_from(sa.table(source.table))
        what = f"table {source.table!r}"
    else:
        statement = sa.text(source.query or "")
        what = "query"
    try:
        with engine.connect() as conn:
            result = conn.execute(statement)
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()), dtype=object)
    except Exception as err:
        raise SourceError(f"SQL source {label} ({what}) cannot be read: {err}") from None
    finally:
        engine.dispose()
    return frame


def read_http(source: HttpSource) -> pd.DataFrame:
    import requests

    records: list[dict[str, Any]] = []
    page = source.first_page
    session = requests.Session()
    session.headers.update(source.headers)
    for _ in range(source.max_pages):
        params = {source.page_param: page, source.page_size_param: source.page_size}
        try:
            response = session.get(source.url, params=params, timeout=source.timeout_s)
            response.raise_for_status()
            body = response.json()
        except ValueError as err:  # before RequestException: requests' JSONDecodeError is both
            raise SourceError(
                f"HTTP source {source.url} (page {page}) is not JSON: {err}"
            ) from None
        except requests.RequestException as err:
            raise SourceError(
                f"HTTP source {source.url} (page {page}) cannot be read: {err}"
            ) from None
        batch = (
            body
            if source.records_key is None
            else body.get(source.records_key)
            if isinstance(body, dict)
            else None
        )
        if not isinstance(batch, list):
            raise SourceError(
                f"HTTP source {source.url} (page {page}): expected a list of records under "
                f"{source.records_key!r}"
            )
        records.extend(batch)
        if len(batch) < source.page_size:
            break
        page += 1
    else:
        raise SourceError(
            f"HTTP source {source.url}: still receiving full pages after {source.max_pages} pages"
        )
    return pd.DataFrame.from_records(records).astype(object) if records else pd.DataFrame()


def read_source(data: DataConfig, contract: Contract, root: Path) -> pd.DataFrame:
    source = data.source
    if isinstance(source, CsvSource):
        return read_csv(source, contract, root)
    if isinstance(source, SqlSource):
        return read_sql(source, root)
    return read_http(source)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Raw:
    """The rows as the source gave them (not yet typed), and what is known of the source."""

    frame: pd.DataFrame
    label: str  # how messages name the source
    sha256: str | None = None  # of the file, when the source is one


def read(data: DataConfig, contract: Contract, root: Path) -> Raw:
    """The stage's input: the configured source, read (paths are relative to ``root``)."""
    frame = read_source(data, contract, root)
    sha256 = None
    if isinstance(data.source, CsvSource):
        path = data.source.path if data.source.path.is_absolute() else root / data.source.path
        sha256 = file_sha256(path)
    return Raw(frame=frame, label=source_label(data.source, root), sha256=sha256)


# --- the stage ----------------------------------------------------------------------------


@dataclass
class Ingested:
    frame: pd.DataFrame  # in the contract's types, with the bookkeeping columns
    record: IngestRecord


def content_hash(frame: pd.DataFrame) -> str:
    """A stable hash of the ingested values (independent of the Parquet encoding)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


def resample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Draw ``rows`` rows with replacement, kept in source order (a larger, realistic input)."""
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.integers(0, len(frame), size=rows))
    out = frame.iloc[picks].reset_index(drop=True)
    out[SOURCE_ROW] = np.arange(rows, dtype=np.int64)
    return out


def ingest(raw: Raw, contract: Contract, data: DataConfig) -> Ingested:
    """The source's rows in the contract's types (resampled when the config says so), and
    their record."""
    if raw.frame.empty:
        raise SourceError(f"{raw.label} returned no rows")
    try:
        typed = contract.coerce(raw.frame)
    except ContractError as err:  # e.g. a wrong separator: one column named 'a;b;c'
        found = [str(c) for c in raw.frame.columns[:10]]
        raise ContractError(f"{raw.label}: {err}; the source has columns {found}") from None
    resampled_from = None
    if data.resample_rows is not None:
        resampled_from = len(typed)
        typed = resample(typed, data.resample_rows, data.resample_seed)
    record = IngestRecord(
        source=describe_source(data.source),
        rows=len(typed),
        columns=list(contract.columns),
        dropped_columns=[c for c in raw.frame.columns if c not in contract.columns],
        cells_failing_type=int(typed["_type_errors"].notna().sum()),
        content_sha256=content_hash(typed),
        source_sha256=raw.sha256,
        resampled_from=resampled_from,
        contract=contract.name,
    )
    return Ingested(frame=typed, record=record)


# ``ParamsView``, the part of the params every view shares: ingest reads only ``data``, so the
# pipeline's settings module (the other stages' sections) is not a dependency of this stage.
def run(params: ParamsView, contract: Contract, paths: Layout) -> Ingested:
    """The stage: read the source, type its rows, write them and the record."""
    data = params.data
    out = ingest(read(data, contract, paths.root), contract, data)
    write_parquet(out.frame, paths.ingested, contract.arrow_schema())
    write_json(asdict(out.record), paths.ingest_record)
    return out
