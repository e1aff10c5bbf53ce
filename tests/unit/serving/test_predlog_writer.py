"""The prediction log's files (rotation, retention, back-pressure) and the request validator's
unknown-category policy, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.paths import REPO

from plumbline.core.contract import Contract
from plumbline.core.predlog import read_log
from plumbline.monitoring.settings import load_params
from plumbline.serving.metrics import ServeMetrics
from plumbline.serving.predlog_writer import Batch, PredictionLog
from plumbline.serving.schema import RequestInvalid, RequestValidator
from plumbline.serving.scorer import smoke_rows
from plumbline.serving.settings import PredictionLogConfig


@pytest.fixture(scope="module")
def features(contract: Contract) -> list[str]:
    return contract.feature_columns(load_params(REPO / "params.yaml").featurize.exclude_columns)


def _batch(contract: Contract, features: list[str], n: int, request_id: str) -> Batch:
    rows = (smoke_rows(contract, features) * n)[:n]
    p = np.linspace(0, 1, n)
    return Batch(
        request_ids=[request_id],
        row_counts=[n],
        received_at=[1_700_000_000.0],
        model_name="m",
        model_version="7",
        rows=rows,
        probabilities=p,
        labels=(p >= 0.5).astype(np.int64),
    )


def test_log_rotates_keeps_the_newest_files_and_types_columns(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    cfg = PredictionLogConfig(dir=tmp_path, rotate_rows=10, max_files=2, flush_s=60)
    log = PredictionLog(cfg, tmp_path, contract, features, ServeMetrics(False, "worker"))
    log.start()
    for i in range(5):
        log.append(_batch(contract, features, 10, f"r{i}"))
    log.close()
    files = sorted(tmp_path.glob("predictions-*.parquet"))
    assert len(files) == 2 and not list(tmp_path.glob("*.inprogress"))
    table = read_log(tmp_path).to_pandas()
    assert sorted(set(table["request_id"])) == ["r3", "r4"]  # the oldest files were pruned
    assert table["row"].tolist() == list(range(10)) * 2
    schema = pq.read_schema(files[0])
    assert str(schema.field("age").type) == "int64"
    assert str(schema.field("job").type) == "string"
    assert str(schema.field("received_at").type) == "timestamp[us, tz=UTC]"


def test_log_drops_and_never_blocks_when_the_writer_lags(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    cfg = PredictionLogConfig(dir=tmp_path, max_pending_rows=25, flush_s=60)
    log = PredictionLog(cfg, tmp_path, contract, features, ServeMetrics(False, "worker"))
    for i in range(4):  # the writer thread is not even started: nothing drains
        log.append(_batch(contract, features, 10, f"r{i}"))
    log.close()
    assert len(read_log(tmp_path)) == 20  # two batches fit, two were dropped


def test_unknown_category_policy(contract: Contract, features: list[str]) -> None:
    record = dict(zip(features, smoke_rows(contract, features)[0], strict=True))
    record["job"] = "astronaut"
    body = json.dumps(record).encode()
    with pytest.raises(RequestInvalid) as err:
        RequestValidator(contract, features, "reject", 10).parse(body)
    assert err.value.fields == {"job"}
    rows, single = RequestValidator(contract, features, "allow", 10).parse(body)
    assert single and rows[0][features.index("job")] == "astronaut"
