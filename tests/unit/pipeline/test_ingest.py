"""Ingest reads CSV, SQL (SQLite through SQLAlchemy) and paged HTTP JSON into the contract's
Arrow schema; the same rows give the same content hash whatever the source. The typing itself
(:func:`ingest.ingest`) works on rows in memory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.data import bank_text, data_config, ingested, to_sqlite, with_bad_cells
from support.paths import BANK_CONTRACT

from plumbline.cli.main import main
from plumbline.core.contract import SOURCE_ROW, TYPE_ERRORS, Contract, ContractError
from plumbline.core.paths import layout
from plumbline.pipeline import ingest
from plumbline.pipeline.ingest import Raw, SourceError
from plumbline.pipeline.settings import PipelineParams


def test_ingest_types_rows_in_memory(contract: Contract) -> None:
    text = with_bad_cells(bank_text()).assign(branch="north")  # a column the contract lacks
    data = data_config({"kind": "csv", "path": "rows.csv", "sep": ";"})
    raw = Raw(frame=text, label="CSV source rows.csv", sha256="f00")
    out = ingest.ingest(raw, contract, data)
    record = out.record
    assert record.rows == len(out.frame) == len(text) == 300
    assert list(out.frame.columns) == contract.arrow_schema().names
    assert out.frame[SOURCE_ROW].tolist() == list(range(300))
    assert record.cells_failing_type == 3  # abc, 2.5, n/a; the empty cell is a null
    assert json.loads(out.frame.loc[5, TYPE_ERRORS]) == {"age": "abc"}
    assert pd.isna(out.frame.loc[3, "age"]) and pd.isna(out.frame.loc[3, TYPE_ERRORS])
    assert record.dropped_columns == ["branch"]
    assert record.source == {"kind": "csv", "path": "rows.csv", "sep": ";", "encoding": "utf-8"}
    assert (record.source_sha256, record.resampled_from) == ("f00", None)
    assert record.content_sha256 == ingest.content_hash(out.frame)
    assert record.contract == contract.name

    more = data_config(data.source.model_dump(), resample_rows=1000, resample_seed=1)
    resampled = ingest.ingest(raw, contract, more)
    assert (resampled.record.rows, resampled.record.resampled_from) == (1000, 300)
    assert resampled.frame[SOURCE_ROW].tolist() == list(range(1000))
    assert resampled.frame["age"].isin(out.frame["age"]).all()
    again = ingest.ingest(raw, contract, more)
    assert again.record.content_sha256 == resampled.record.content_sha256  # seeded


def test_ingest_refuses_no_rows_and_foreign_columns(contract: Contract) -> None:
    data = data_config({"kind": "csv", "path": "rows.csv"})
    with pytest.raises(SourceError, match=r"^CSV source rows\.csv returned no rows$"):
        ingest.ingest(Raw(frame=pd.DataFrame(), label="CSV source rows.csv"), contract, data)
    wrong = pd.DataFrame({"a;b;c": ["1;2;3"]})
    with pytest.raises(ContractError, match=r"CSV source rows\.csv: .* columns \['a;b;c'\]$"):
        ingest.ingest(Raw(frame=wrong, label="CSV source rows.csv"), contract, data)


def test_csv_honours_separator_and_encoding(tmp_path: Path, contract: Contract) -> None:
    text = bank_text()
    path = tmp_path / "rows.csv"
    text.to_csv(path, sep="|", index=False, encoding="utf-16")
    out = ingested(
        data_config({"kind": "csv", "path": str(path), "sep": "|", "encoding": "utf-16"}),
        contract,
        tmp_path,
    )
    frame, record = out.frame, out.record
    assert record.rows == len(frame) == 300
    assert frame["age"].tolist() == text["age"].astype(int).tolist()
    assert frame["job"].tolist() == text["job"].tolist()
    assert frame[TYPE_ERRORS].isna().all()
    with pytest.raises(SourceError, match=f"CSV source {path} cannot be read"):
        ingested(data_config({"kind": "csv", "path": str(path), "sep": "|"}), contract, tmp_path)


def test_parquet_has_the_contract_schema_and_a_record(tmp_path: Path, contract: Contract) -> None:
    csv = tmp_path / "rows.csv"
    with_bad_cells(bank_text()).to_csv(csv, sep=";", index=False)
    paths = layout(tmp_path)
    out, record_path = paths.ingested, paths.ingest_record
    params = PipelineParams(data=data_config({"kind": "csv", "path": "rows.csv", "sep": ";"}))
    result = ingest.run(params, contract, paths)
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
    assert record == asdict(result.record)  # what the runner returns is what it wrote
    pd.testing.assert_frame_equal(written, result.frame)


def test_sql_query(tmp_path: Path, contract: Contract) -> None:
    text = bank_text()
    to_sqlite(text, tmp_path / "rows.db")
    out = ingested(
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
    frame, record = out.frame, out.record
    assert record.rows == (text["y"] == "yes").sum() > 0
    assert set(frame["y"]) == {"yes"}
    assert record.source["query"] == "SELECT * FROM rows WHERE y = 'yes'"


def test_wrong_separator_names_the_source(tmp_path: Path, contract: Contract) -> None:
    path = tmp_path / "rows.csv"
    bank_text(5).to_csv(path, sep=";", index=False)
    with pytest.raises(ContractError, match=f"CSV source {path}: source lacks columns"):
        ingested(data_config({"kind": "csv", "path": str(path), "sep": ","}), contract, tmp_path)


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


def test_a_serving_setting_cannot_stop_a_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stage loads the pipeline's sections of params.yaml only; check-config reads it all."""
    bank_text().to_csv(tmp_path / "rows.csv", sep=";", index=False)
    source = {"kind": "csv", "path": "rows.csv", "sep": ";"}
    params = {"data": {"contract": str(BANK_CONTRACT), "source": source}}
    (tmp_path / "params.yaml").write_text(json.dumps({**params, "serve": {"threshold": "high"}}))
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    assert main(["ingest"]) == 0
    assert len(pd.read_parquet(tmp_path / "data/interim/ingested.parquet")) == 300
    assert main(["check-config"]) == 1
    assert "serve.threshold" in capsys.readouterr().err
