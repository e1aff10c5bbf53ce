"""Ingest reads CSV, SQL (SQLite through SQLAlchemy) and paged HTTP JSON into the contract's
Arrow schema; the same rows give the same content hash whatever the source."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from support.data import bank_text, data_config, ingested, to_sqlite, typed, with_bad_cells
from support.net import free_port

from plumbline.core.contract import TYPE_ERRORS, Contract
from plumbline.pipeline.ingest import SourceError


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
    results = {k: ingested(data_config(s), contract, tmp_path) for k, s in sources.items()}
    hashes = {k: out.record.content_sha256 for k, out in results.items()}
    assert len(set(hashes.values())) == 1, hashes
    assert {out.record.rows for out in results.values()} == {300}
    # 300 rows in pages of 64: four full pages, then a partial one that ends the paging.
    assert server.pages == [1, 2, 3, 4, 5]
    frame = results["http"].frame
    assert frame["_source_row"].tolist() == list(range(300))
    assert frame["age"].tolist()[:3] == [int(a) for a in text["age"][:3]]


def test_http_stops_at_an_empty_page_after_full_pages(contract: Contract, server: Rows) -> None:
    serve(server, bank_text(128))  # exactly two full pages; every value a JSON string
    out = ingested(
        data_config({"kind": "http", "url": f"{server.base}/rows", "page_size": 64}),
        contract,
        Path("."),
    )
    frame = out.frame
    assert out.record.rows == 128
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
    csv = ingested(
        data_config({"kind": "csv", "path": str(tmp_path / "flags.csv")}), flags, tmp_path
    )
    http = ingested(data_config({"kind": "http", "url": f"{server.base}/rows"}), flags, tmp_path)
    from_csv, from_http = csv.frame, http.frame
    assert from_http["flag"].tolist() == from_csv["flag"].tolist() == ["true", "false", "true"]
    assert http.record.content_sha256 == csv.record.content_sha256
    assert flags.encode_target(from_http["flag"]).tolist() == [1, 0, 1]


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
        ingested(data_config(source), contract, tmp_path)
    assert name in str(err.value)
    assert not (tmp_path / "nope.db").exists()  # SQLite must not create a missing database
