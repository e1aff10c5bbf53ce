"""The prediction log's rollout columns: written per batch, read by the monitor's store, and
files from before they existed read as the champion's answers with the rollout off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.paths import REPO

from plumbline.core.contract import Contract, load_contract
from plumbline.core.predlog import ROLLOUT_COLUMNS, read_log
from plumbline.monitoring.settings import load_params
from plumbline.monitoring.store import MonitorStore
from plumbline.serving.metrics import ServeMetrics
from plumbline.serving.predlog_writer import Batch, PredictionLog
from plumbline.serving.scorer import smoke_rows
from plumbline.serving.settings import PredictionLogConfig


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(REPO / "contracts/bank_marketing.yaml")


@pytest.fixture(scope="module")
def features(contract: Contract) -> list[str]:
    return contract.feature_columns(load_params(REPO / "params.yaml").featurize.exclude_columns)


def _batch(contract: Contract, features: list[str], rid: str, **rollout: object) -> Batch:
    rows = smoke_rows(contract, features)[:4]
    p = np.array([0.1, 0.4, 0.6, 0.9])
    return Batch(
        request_ids=[rid],
        row_counts=[4],
        received_at=[1_700_000_000.0],
        model_name="m",
        model_version="7",
        rows=rows,
        probabilities=p,
        labels=(p >= 0.5).astype(np.int64),
        **rollout,  # type: ignore[arg-type]
    )


def test_rollout_columns_are_logged_and_stored(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    log = PredictionLog(
        PredictionLogConfig(dir=tmp_path, flush_s=0.05),
        tmp_path,
        contract,
        features,
        ServeMetrics(False, role="worker"),
    )
    log.start()
    log.append(_batch(contract, features, "plain"))
    shadow = np.array([0.2, 0.3, 0.7, 0.8])
    log.append(
        _batch(
            contract,
            features,
            "shadowed",
            rollout="shadow",
            shadow_version="8",
            shadow_probabilities=shadow,
        )
    )
    log.append(_batch(contract, features, "canary", arm="challenger", rollout="canary"))
    log.close()
    table = read_log(tmp_path)
    by_id = {rid: i for i, rid in enumerate(table["request_id"].to_pylist())}
    assert table.column("arm").to_pylist()[by_id["canary"]] == "challenger"
    assert table.column("rollout").to_pylist()[by_id["plain"]] == "off"
    scores = table.column("shadow_probability").to_pylist()
    assert scores[by_id["plain"]] is None
    shadowed = [i for i, r in enumerate(table["request_id"].to_pylist()) if r == "shadowed"]
    assert [scores[i] for i in shadowed] == shadow.tolist()

    store = MonitorStore(tmp_path / "monitor.sqlite", contract, features)
    assert store.ingest_log(tmp_path).rows == 12
    with store.connect() as conn:
        got = conn.execute(
            "SELECT request_id, arm, rollout, shadow_version, shadow_probability "
            "FROM predictions ORDER BY request_id, row"
        ).fetchall()
    assert got[0] == ("canary", "challenger", "canary", None, None)
    assert got[4] == ("plain", "champion", "off", None, None)
    assert got[8:] == [("shadowed", "champion", "shadow", "8", q) for q in shadow.tolist()]


def test_a_file_from_before_the_rollout_columns_reads_as_champion_off(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    log = PredictionLog(
        PredictionLogConfig(dir=tmp_path, flush_s=0.05),
        tmp_path,
        contract,
        features,
        ServeMetrics(False, role="worker"),
    )
    log.start()
    log.append(_batch(contract, features, "old"))
    log.close()
    [path] = list(tmp_path.glob("predictions-*.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(list(ROLLOUT_COLUMNS)), path)
    store = MonitorStore(tmp_path / "monitor.sqlite", contract, features)
    assert store.ingest_log(tmp_path).rows == 4
    with store.connect() as conn:
        got = conn.execute("SELECT DISTINCT arm, rollout, shadow_probability FROM predictions")
        assert got.fetchall() == [("champion", "off", None)]
