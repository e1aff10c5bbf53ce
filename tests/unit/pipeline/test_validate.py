"""Validate quarantines each injected bad row with the right reason and drops nothing (in
memory, and in the files the stage writes); the Pydantic record model rejects what the GX
suite rejects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest
import yaml
from support.data import bank_text, data_config
from support.paths import BANK_CONTRACT, BANK_SMALL

from plumbline.cli.main import main
from plumbline.core import yamlfile
from plumbline.core.contract import REASONS, SOURCE_ROW, TYPE_ERRORS, Contract
from plumbline.core.paths import Layout, layout
from plumbline.pipeline import ingest, validate
from plumbline.pipeline.settings import PipelineParams, ValidateConfig
from plumbline.pipeline.validate import ValidationFailed

# Source row -> the reasons it must be quarantined with.
EXPECTED = {
    3: ["not_null:age"],  # empty cell
    4: ["range:age"],  # 500
    5: ["type:age"],  # "abc": a type error, not also a null
    6: ["type:campaign"],  # 2.5 in an integer column
    7: ["category:job"],  # "astronaut"
    9: ["range:emp.var.rate"],  # 50
    11: ["category:job", "range:age"],  # two problems in one row
    300: ["duplicate"],  # exact copy of row 10
    301: ["type:age"],  # row 5 again, but "xyz": not a duplicate of "abc"
}


def bad_rows_text() -> pd.DataFrame:
    """The first 300 bank rows as text, with the bad cells and rows of ``EXPECTED``."""
    text = bank_text()
    edits = {
        3: ("age", ""),
        4: ("age", "500"),
        5: ("age", "abc"),
        6: ("campaign", "2.5"),
        7: ("job", "astronaut"),
        9: ("emp.var.rate", "50"),
    }
    for row, (column, value) in edits.items():
        text.loc[row, column] = value
    text.loc[11, ["age", "job"]] = ["500", "astronaut"]
    again = text.iloc[[5]].assign(age="xyz")
    return pd.concat([text, text.iloc[[10]], again], ignore_index=True)


def bad_rows_csv(path: Path) -> Path:
    bad_rows_text().to_csv(path, sep=";", index=False)
    return path


@dataclass
class Outputs:
    paths: Layout
    frame: pd.DataFrame  # what validate read

    valid = property(lambda self: self.paths.valid)
    quarantine = property(lambda self: self.paths.quarantine)
    report_file = property(lambda self: self.paths.validation_report)
    suite = property(lambda self: self.paths.expectation_suite)
    docs = property(lambda self: self.paths.data_docs)


def run_validate(dir: Path, contract: Contract, max_bad_fraction: float) -> Outputs:
    """The ingest and validate stages on the bad rows, in project ``dir``."""
    csv = bad_rows_csv(dir / "rows.csv")
    params = PipelineParams.model_validate(
        {
            "data": data_config({"kind": "csv", "path": str(csv), "sep": ";"}),
            "validate": {"max_bad_fraction": max_bad_fraction, "check_duplicates": True},
        }
    )
    paths = layout(dir)
    out = Outputs(paths, ingest.run(params, contract, paths).frame)
    validate.run(params, contract, paths)
    return out


@pytest.fixture(scope="module")
def bad_rows(contract: Contract) -> pd.DataFrame:
    """The bad rows, typed by ingest in memory."""
    raw = ingest.Raw(frame=bad_rows_text(), label="the bad rows")
    return ingest.ingest(raw, contract, data_config({"kind": "csv", "path": "rows.csv"})).frame


def test_validate_in_memory_splits_every_row_once(
    bad_rows: pd.DataFrame, contract: Contract
) -> None:
    out = validate.validate(bad_rows, contract, ValidateConfig(max_bad_fraction=0.05))
    report = out.report
    assert len(out.valid) + len(out.quarantine) == len(bad_rows) == report.rows_in == 302
    assert (report.rows_valid, report.rows_quarantined) == (len(out.valid), len(out.quarantine))
    assert sorted([*out.valid[SOURCE_ROW], *out.quarantine[SOURCE_ROW]]) == list(range(302))
    got = dict(zip(out.quarantine[SOURCE_ROW], map(sorted, out.quarantine[REASONS]), strict=True))
    assert got == EXPECTED
    assert REASONS not in out.valid.columns
    assert report.passed and report.quarantined_fraction == pytest.approx(9 / 302, abs=1e-6)
    assert "id" not in out.suite and all("id" not in e for e in out.suite["expectations"])
    assert {"not_null:age", "duplicate"} <= {e["meta"]["check"] for e in out.suite["expectations"]}


def test_validate_in_memory_follows_its_settings(
    bad_rows: pd.DataFrame, contract: Contract
) -> None:
    # Too many bad rows: the report says so; failing the stage is the runner's part.
    strict = validate.validate(bad_rows, contract, ValidateConfig(max_bad_fraction=0.01))
    assert not strict.report.passed and strict.report.max_bad_fraction == 0.01
    assert strict.report.rows_quarantined == 9
    # Without the duplicate check the copy of row 10 is valid, and the suite has no such check.
    keep = validate.validate(bad_rows, contract, ValidateConfig(check_duplicates=False))
    assert keep.report.rows_quarantined == 8 and 300 in set(keep.valid[SOURCE_ROW])
    assert "duplicate" not in keep.report.checks
    assert "duplicate" not in {e["meta"]["check"] for e in keep.suite["expectations"]}


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory, contract: Contract) -> Outputs:
    return run_validate(tmp_path_factory.mktemp("validate"), contract, max_bad_fraction=0.05)


def test_each_bad_row_is_quarantined_with_its_reason(validated: Outputs) -> None:
    quarantine = pd.read_parquet(validated.quarantine)
    got = {
        row: sorted(reasons)
        for row, reasons in zip(quarantine[SOURCE_ROW], quarantine[REASONS], strict=True)
    }
    assert got == EXPECTED


def test_nothing_is_dropped_and_counts_add_up(validated: Outputs) -> None:
    valid = pd.read_parquet(validated.valid)
    quarantine = pd.read_parquet(validated.quarantine)
    report = json.loads(validated.report_file.read_text())
    assert report["rows_in"] == 302
    assert report["rows_in"] == report["rows_valid"] + report["rows_quarantined"]
    assert (report["rows_valid"], report["rows_quarantined"]) == (len(valid), len(quarantine))
    assert sorted([*valid[SOURCE_ROW], *quarantine[SOURCE_ROW]]) == list(range(302))
    counts: dict[str, int] = {}
    for reasons in EXPECTED.values():
        for check in reasons:
            counts[check] = counts.get(check, 0) + 1
    assert report["checks"] == counts
    assert report["passed"] is True
    assert report["quarantined_fraction"] == pytest.approx(9 / 302, abs=1e-6)


def test_quarantine_keeps_the_original_values(validated: Outputs, contract: Contract) -> None:
    quarantine = pd.read_parquet(validated.quarantine).set_index(SOURCE_ROW)
    assert quarantine.loc[4, "age"] == 500
    assert quarantine.loc[7, "job"] == "astronaut"
    assert quarantine.loc[9, "emp.var.rate"] == 50.0
    assert json.loads(quarantine.loc[5, TYPE_ERRORS]) == {"age": "abc"}
    assert json.loads(quarantine.loc[6, TYPE_ERRORS]) == {"campaign": "2.5"}
    assert pd.isna(quarantine.loc[3, "age"]) and pd.isna(quarantine.loc[3, TYPE_ERRORS])
    schema = pq.read_schema(validated.quarantine).remove_metadata()
    assert schema.names == [*contract.arrow_schema().names, REASONS]
    assert schema.field("age").type == pa.int64()


def test_gx_suite_and_data_docs_are_written(validated: Outputs) -> None:
    assert (validated.docs / "index.html").is_file()
    assert list(validated.docs.rglob("validations/**/*.html"))
    suite = json.loads(validated.suite.read_text())
    checks = {e["meta"]["check"] for e in suite["expectations"]}
    assert {"not_null:age", "range:age", "category:job", "type", "duplicate"} <= checks
    report = json.loads(validated.report_file.read_text())
    assert report["gx_statistics"]["unsuccessful_expectations"] > 0


def test_too_many_bad_rows_fail_with_a_clear_message(tmp_path: Path, contract: Contract) -> None:
    with pytest.raises(ValidationFailed) as err:
        run_validate(tmp_path, contract, max_bad_fraction=0.01)
    message = str(err.value)
    assert message.startswith(
        "9 of 302 rows (2.98%) failed the contract, above validate.max_bad_fraction=1.00%"
    )
    assert "type:age (2)" in message
    assert str(layout(tmp_path).quarantine) in message
    # The evidence is written before the stage fails.
    assert len(pd.read_parquet(layout(tmp_path).quarantine)) == 9


def test_cli_exits_1_when_too_many_rows_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_rows_csv(tmp_path / "rows.csv")
    params = yamlfile.safe_load((BANK_CONTRACT.parents[1] / "params.yaml").read_text())
    params["data"].update(
        contract=str(BANK_CONTRACT), source={"kind": "csv", "path": "rows.csv", "sep": ";"}
    )
    params["validate"]["max_bad_fraction"] = 0.02
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    assert main(["ingest"]) == 0
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "plumbline validate: error: 9 of 302 rows (2.98%) failed the contract" in err
    assert "Traceback" not in err


def test_record_model_rejects_what_gx_rejects(validated: Outputs, contract: Contract) -> None:
    """Null, range and category checks agree row by row. Type-error rows differ by design:
    coercion already nulled the cell, so they are tested on raw values below."""
    pydantic_says = dict(enumerate(contract.record_errors(validated.frame)))
    gx_says: dict[int, list[str]] = {i: [] for i in range(len(validated.frame))}
    quarantine = pd.read_parquet(validated.quarantine)
    for row, reasons in zip(quarantine[SOURCE_ROW], quarantine[REASONS], strict=True):
        gx_says[row] = sorted(
            r.split(":", 1)[1]
            for r in reasons
            if r.split(":")[0] in ("not_null", "range", "category")
        )
    for row in (5, 6, 301):  # the type-error rows
        del pydantic_says[row], gx_says[row]
    assert pydantic_says == gx_says
    assert sum(map(bool, pydantic_says.values())) == 5  # rows 3, 4, 7, 9, 11


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("age", "abc"),
        ("age", "35"),
        ("campaign", 2.5),
        ("age", None),
        ("age", 500),
        ("job", "astronaut"),
        ("emp.var.rate", 50.0),
    ],
)
def test_record_model_on_raw_values(column: str, value: object, contract: Contract) -> None:
    model = contract.record_model()
    record = pd.read_csv(BANK_SMALL, sep=";", nrows=1).to_dict(orient="records")[0]
    model.model_validate(record)  # the real row is valid
    with pytest.raises(pydantic.ValidationError) as err:
        model.model_validate({**record, column: value})
    assert [e["loc"][0] for e in err.value.errors()] == [column]
