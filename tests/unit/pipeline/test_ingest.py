"""Ingest reads CSV, SQL (SQLite through SQLAlchemy) and paged HTTP JSON into the contract's
Arrow schema; the same rows give the same content hash whatever the source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.data import bank_text, data_config, to_sqlite, with_bad_cells
from support.paths import BANK_CONTRACT

from plumbline.cli.main import main
from plumbline.core.contract import TYPE_ERRORS, Contract, ContractError
from plumbline.pipeline import ingest
from plumbline.pipeline.ingest import SourceError


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
