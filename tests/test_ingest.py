"""Ingest reads CSV, SQL (SQLite through SQLAlchemy) and paged HTTP JSON into the contract's
Arrow schema; the same rows give the same content hash whatever the source."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import BANK_CONTRACT, bank_text, data_config

from plumbline.cli import main
from plumbline.contract import TYPE_ERRORS, Contract, ContractError
from plumbline.stages import ingest
from plumbline.stages.ingest import SourceError


class Rows(ThreadingHTTPServer):
    """/rows?page=N&page_size=K serves ``records`` page by page; /fail is a 500, /html not JSON."""

    records: list[dict[str, Any]]
    pages: list[int]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RowsHandler(BaseHTTPRequestHandler):
    server: Rows

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/rows":
            page, size = int(query["page"][0]), int(query["page_size"][0])
            self.server.pages.append(page)
            body = json.dumps({"records": self.server.records[(page - 1) * size : page * size]})
            self._send(200, body.encode(), "application/json")
        elif url.path == "/html":
            self._send(200, b"<html>maintenance</html>", "text/html")
        else:
            self._send(500, b"boom", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[Rows]:
    srv = Rows(("127.0.0.1", 0), RowsHandler)  # port 0: a free port
    srv.records, srv.pages = [], []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def serve(server: Rows, frame: pd.DataFrame) -> None:
    """Serve the frame's rows as JSON records, typed as pandas reads them (ints, floats, null)."""
    server.records = json.loads(frame.to_json(orient="records"))
    server.pages = []


def to_sqlite(frame: pd.DataFrame, path: Path) -> None:
    with sqlite3.connect(path) as conn:
        frame.to_sql("rows", conn, index=False)


def typed(csv: Path) -> pd.DataFrame:
    """The CSV as pandas types it: the same rows as the SQL table and the JSON records."""
    return pd.read_csv(csv, sep=";", keep_default_na=False, na_values=[""])


def with_bad_cells(text: pd.DataFrame) -> pd.DataFrame:
    text.loc[3, "age"] = ""
    text.loc[5, "age"] = "abc"
    text.loc[6, "campaign"] = "2.5"
    text.loc[7, "job"] = "astronaut"
    text.loc[8, "euribor3m"] = "n/a"
    return text


def test_csv_honours_separator_and_encoding(tmp_path: Path, contract: Contract) -> None:
    text = bank_text()
    path = tmp_path / "rows.csv"
    text.to_csv(path, sep="|", index=False, encoding="utf-16")
    frame, record = ingest.ingest(
        data_config({"kind": "csv", "path": str(path), "sep": "|", "encoding": "utf-16"}),
        contract,
        tmp_path,
    )
    assert record.rows == len(frame) == 300
    assert frame["age"].tolist() == text["age"].astype(int).tolist()
    assert frame["job"].tolist() == text["job"].tolist()
    assert frame[TYPE_ERRORS].isna().all()
    with pytest.raises(SourceError, match=f"CSV source {path} cannot be read"):
        ingest.ingest(
            data_config({"kind": "csv", "path": str(path), "sep": "|"}), contract, tmp_path
        )


def test_parquet_has_the_contract_schema_and_a_record(tmp_path: Path, contract: Contract) -> None:
    csv = tmp_path / "rows.csv"
    with_bad_cells(bank_text()).to_csv(csv, sep=";", index=False)
    out, record_path = tmp_path / "ingested.parquet", tmp_path / "ingest.json"
    ingest.run(
        data_config({"kind": "csv", "path": "rows.csv", "sep": ";"}),
        contract,
        tmp_path,
        out,
        record_path,
    )
    schema = pq.read_schema(out)
    assert schema.remove_metadata().equals(contract.arrow_schema().remove_metadata())
    assert schema.metadata[b"plumbline.contract"] == b"bank_marketing"

    record = json.loads(record_path.read_text())
    assert record["rows"] == 300
    assert record["source"] == {"kind": "csv", "path": "rows.csv", "sep": ";", "encoding": "utf-8"}
    assert record["cells_failing_type"] == 3  # abc, 2.5, n/a; the empty cell is a null
    assert record["source_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    written = pd.read_parquet(out)
    assert record["content_sha256"] == ingest.content_hash(written)
    assert json.loads(written.loc[5, TYPE_ERRORS]) == {"age": "abc"}


@pytest.mark.parametrize("bad_cells", [False, True], ids=["clean", "bad-cells"])
def test_same_rows_same_hash_from_csv_sql_and_http(
    tmp_path: Path, contract: Contract, server: Rows, bad_cells: bool
) -> None:
    text = bank_text()
    if bad_cells:
        text = with_bad_cells(text)
    csv = tmp_path / "rows.csv"
    text.to_csv(csv, sep=";", index=False)
    rows = typed(csv)
    to_sqlite(rows, tmp_path / "rows.db")
    serve(server, rows)

    sources = {
        "csv": {"kind": "csv", "path": str(csv), "sep": ";"},
        # A relative SQLite path is relative to the project root, like every path in params.
        "sql": {"kind": "sql", "url": "sqlite:///rows.db", "table": "rows"},
        "http": {"kind": "http", "url": f"{server.base}/rows", "page_size": 64},
    }
    results = {k: ingest.ingest(data_config(s), contract, tmp_path) for k, s in sources.items()}
    hashes = {k: record.content_sha256 for k, (_, record) in results.items()}
    assert len(set(hashes.values())) == 1, hashes
    assert {record.rows for _, record in results.values()} == {300}
    # 300 rows in pages of 64: four full pages, then a partial one that ends the paging.
    assert server.pages == [1, 2, 3, 4, 5]
    frame = results["http"][0]
    assert frame["_source_row"].tolist() == list(range(300))
    assert frame["age"].tolist()[:3] == [int(a) for a in text["age"][:3]]


def test_sql_query(tmp_path: Path, contract: Contract) -> None:
    text = bank_text()
    to_sqlite(text, tmp_path / "rows.db")
    frame, record = ingest.ingest(
        data_config(
            {
                "kind": "sql",
                "url": f"sqlite:///{tmp_path / 'rows.db'}",
                "query": "SELECT * FROM rows WHERE y = 'yes'",
            }
        ),
        contract,
        tmp_path,
    )
    assert record.rows == (text["y"] == "yes").sum() > 0
    assert set(frame["y"]) == {"yes"}
    assert record.source["query"] == "SELECT * FROM rows WHERE y = 'yes'"


def test_http_stops_at_an_empty_page_after_full_pages(contract: Contract, server: Rows) -> None:
    serve(server, bank_text(128))  # exactly two full pages; every value a JSON string
    frame, record = ingest.ingest(
        data_config({"kind": "http", "url": f"{server.base}/rows", "page_size": 64}),
        contract,
        Path("."),
    )
    assert record.rows == 128
    assert server.pages == [1, 2, 3]
    assert frame["age"].dtype == "int64"
    assert frame[TYPE_ERRORS].isna().all()


def test_json_booleans_read_like_csv_text(tmp_path: Path, server: Rows) -> None:
    flags = Contract.model_validate(
        {
            "name": "flags",
            "rows_time_ordered": True,
            "target": {"column": "flag", "positive": "true"},
            "columns": {
                "n": {"type": "integer"},
                "flag": {"type": "category", "categories": ["true", "false"]},
            },
        }
    )
    frame = pd.DataFrame({"n": [1, 2, 3], "flag": [True, False, True]})
    (tmp_path / "flags.csv").write_text("n,flag\n1,true\n2,false\n3,true\n")
    serve(server, frame)
    from_csv, csv_record = ingest.ingest(
        data_config({"kind": "csv", "path": str(tmp_path / "flags.csv")}), flags, tmp_path
    )
    from_http, http_record = ingest.ingest(
        data_config({"kind": "http", "url": f"{server.base}/rows"}), flags, tmp_path
    )
    assert from_http["flag"].tolist() == from_csv["flag"].tolist() == ["true", "false", "true"]
    assert http_record.content_sha256 == csv_record.content_sha256
    assert flags.encode_target(from_http["flag"]).tolist() == [1, 0, 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "case",
    [
        "csv-missing",
        "sqlite-missing",
        "sqlite-table",
        "sqlite-not-a-db",
        "http-refused",
        "http-500",
        "http-html",
    ],
)
def test_unreadable_source_names_it(
    tmp_path: Path, contract: Contract, server: Rows, case: str
) -> None:
    to_sqlite(bank_text(5), tmp_path / "rows.db")
    (tmp_path / "notes.txt").write_text("not a database " * 100)
    port = free_port()
    source, name = {
        "csv-missing": ({"kind": "csv", "path": "missing.csv"}, str(tmp_path / "missing.csv")),
        "sqlite-missing": (
            {"kind": "sql", "url": f"sqlite:///{tmp_path}/nope.db", "table": "rows"},
            f"{tmp_path}/nope.db",
        ),
        "sqlite-table": (
            {"kind": "sql", "url": f"sqlite:///{tmp_path}/rows.db", "table": "customers"},
            "'customers'",
        ),
        "sqlite-not-a-db": (
            {"kind": "sql", "url": f"sqlite:///{tmp_path}/notes.txt", "table": "rows"},
            f"{tmp_path}/notes.txt",
        ),
        "http-refused": (
            {"kind": "http", "url": f"http://127.0.0.1:{port}/rows", "timeout_s": 5},
            f"http://127.0.0.1:{port}/rows",
        ),
        "http-500": ({"kind": "http", "url": f"{server.base}/fail"}, f"{server.base}/fail"),
        "http-html": (
            {"kind": "http", "url": f"{server.base}/html"},
            f"{server.base}/html (page 1) is not JSON",
        ),
    }[case]
    with pytest.raises(SourceError) as err:
        ingest.ingest(data_config(source), contract, tmp_path)
    assert name in str(err.value)
    assert not (tmp_path / "nope.db").exists()  # SQLite must not create a missing database


def test_wrong_separator_names_the_source(tmp_path: Path, contract: Contract) -> None:
    path = tmp_path / "rows.csv"
    bank_text(5).to_csv(path, sep=";", index=False)
    with pytest.raises(ContractError, match=f"CSV source {path}: source lacks columns"):
        ingest.ingest(
            data_config({"kind": "csv", "path": str(path), "sep": ","}), contract, tmp_path
        )


def test_cli_exits_1_naming_a_missing_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "params.yaml").write_text(
        json.dumps(
            {
                "data": {
                    "contract": str(BANK_CONTRACT),
                    "source": {"kind": "csv", "path": "data/raw/gone.csv", "sep": ";"},
                }
            }
        )
    )
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    assert main(["ingest"]) == 1
    assert capsys.readouterr().err == (
        f"plumbline ingest: error: CSV source "
        f"{tmp_path}/data/raw/gone.csv cannot be read: "
        "file not found\n"
    )
    assert not (tmp_path / "data/interim/ingested.parquet").exists()
