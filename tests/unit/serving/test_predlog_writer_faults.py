"""The prediction-log writer under write faults (disk full, permission denied, the directory
gone), injected at the narrowest seam: the function that opens a new Parquet file and the
writer it returns. No server; the real Parquet files are checked."""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.paths import REPO

from plumbline.core.contract import Contract
from plumbline.core.predlog import read_log
from plumbline.monitoring.settings import load_params
from plumbline.serving.metrics import ServeMetrics
from plumbline.serving.predlog_writer import HOST, Batch, PredictionLog
from plumbline.serving.scorer import smoke_rows
from plumbline.serving.settings import PredictionLogConfig


class CountingMetrics(ServeMetrics):
    """The real metrics class with Prometheus off, counting what the log reports."""

    def __init__(self) -> None:
        super().__init__(False, "worker")
        self.dropped = 0
        self.written = 0
        self.write_failures = 0

    def log_dropped(self, rows: int) -> None:
        self.dropped += rows

    def logged(self, rows: int) -> None:
        self.written += rows

    def log_write_failed(self, pending_rows: int) -> None:
        self.write_failures += 1


class Faults:
    """Opens real Parquet writers, but fails (at open, or on a write) while ``error`` is set."""

    def __init__(self) -> None:
        self.error: int | None = None
        self.at = "open"  # or "write": the file opens, then its first write fails

    def __call__(self, path: Path, schema: pa.Schema) -> Any:
        if self.error is not None and self.at == "open":
            path.write_bytes(b"PAR1")  # what a real failed open can leave behind
            raise OSError(self.error, "injected fault", str(path))
        writer = pq.ParquetWriter(path, schema, compression="zstd")
        return _Writer(writer, self)


class _Writer:
    def __init__(self, writer: pq.ParquetWriter, faults: Faults) -> None:
        self.writer, self.faults = writer, faults

    def write_table(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        if self.faults.error is not None and self.faults.at == "write":
            raise OSError(self.faults.error, "injected fault")

    def close(self) -> None:
        self.writer.close()


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


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _finished_rows(directory: Path) -> int:
    files = directory.glob("predictions-*.parquet") if directory.exists() else []
    return sum(pq.read_metadata(f).num_rows for f in files)


def _leftovers(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.inprogress")) if directory.exists() else []


@pytest.mark.parametrize(("error", "at"), [(errno.ENOSPC, "open"), (errno.EACCES, "write")])
def test_rows_survive_a_failing_disk_and_land_when_it_recovers(
    tmp_path: Path, contract: Contract, features: list[str], error: int, at: str
) -> None:
    faults = Faults()
    metrics = CountingMetrics()
    cfg = PredictionLogConfig(dir=tmp_path, rotate_rows=25, flush_s=0.02, retry_max_s=0.1)
    log = PredictionLog(cfg, tmp_path, contract, features, metrics, opener=faults)
    log.start()
    log.append(_batch(contract, features, 10, "before"))
    _wait(lambda: log.pending_rows == 0)  # 10 rows in the unfinished file
    faults.error, faults.at = error, at
    for i in range(6):
        log.append(_batch(contract, features, 10, f"during-{i}"))
    _wait(lambda: metrics.write_failures >= 3)
    # Nothing partial on disk: an unfinished file that failed was removed, and its rows are
    # held for the retry with the new ones; every row is in a finished file or held.
    assert _leftovers(tmp_path) == []
    assert _finished_rows(tmp_path) + log.pending_rows == 70
    assert log.pending_rows >= 45  # at most the first file (25 rows) got finished
    assert log.last_error is not None and "injected fault" in log.last_error
    faults.error = None
    _wait(lambda: log.pending_rows == 0 and log.failures == 0)
    log.close()
    table = read_log(tmp_path).to_pandas()
    assert len(table) == 70
    assert sorted(set(table["request_id"])) == ["before"] + [f"during-{i}" for i in range(6)]
    assert (table.groupby("request_id")["row"].apply(list) == [list(range(10))] * 7).all()
    assert metrics.dropped == 0
    assert metrics.written == 70  # each row counted once, retried or not
    assert _leftovers(tmp_path) == []


def test_a_vanished_directory_is_made_again(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    directory = tmp_path / "logs"
    metrics = CountingMetrics()
    # rotate_s: files are finished (renamed) often, which is where a vanished directory shows
    cfg = PredictionLogConfig(dir=directory, flush_s=0.02, retry_max_s=0.05, rotate_s=0.2)
    log = PredictionLog(cfg, directory, contract, features, metrics)
    log.start()
    log.append(_batch(contract, features, 5, "a"))
    _wait(lambda: log.pending_rows == 0)
    shutil.rmtree(directory)  # the unfinished file goes with it
    log.append(_batch(contract, features, 5, "b"))
    _wait(lambda: metrics.write_failures >= 1)
    _wait(lambda: log.pending_rows == 0 and log.failures == 0 and _finished_rows(directory) == 10)
    log.close()
    assert sorted(read_log(directory).to_pandas()["request_id"].unique()) == ["a", "b"]
    assert _leftovers(directory) == []


def test_past_the_buffer_limit_rows_are_dropped_and_counted(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    faults = Faults()
    faults.error = errno.ENOSPC
    metrics = CountingMetrics()
    cfg = PredictionLogConfig(
        dir=tmp_path, max_pending_rows=35, flush_s=0.02, retry_max_s=0.05, rotate_rows=1000
    )
    log = PredictionLog(cfg, tmp_path, contract, features, metrics, opener=faults)
    log.start()
    accepted = 0
    for i in range(10):
        before = metrics.dropped
        log.append(_batch(contract, features, 10, f"r{i}"))
        accepted += 10 if metrics.dropped == before else 0
        time.sleep(0.03)
    assert accepted == 30 and metrics.dropped == 70
    assert metrics.write_failures >= 1
    faults.error = None
    _wait(lambda: log.pending_rows == 0 and log.failures == 0)
    log.close()
    assert len(read_log(tmp_path)) == accepted
    assert accepted + metrics.dropped == 100  # every row is either written or counted
    assert _leftovers(tmp_path) == []


def test_appending_never_waits_for_a_failing_disk(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    faults = Faults()
    faults.error = errno.ENOSPC
    cfg = PredictionLogConfig(dir=tmp_path, flush_s=0.01, retry_max_s=0.02)
    log = PredictionLog(cfg, tmp_path, contract, features, CountingMetrics(), opener=faults)
    log.start()
    batch = _batch(contract, features, 10, "x")
    started = time.perf_counter()
    for _ in range(1000):
        log.append(batch)
    elapsed = time.perf_counter() - started
    faults.error = None
    log.close()
    assert len(read_log(tmp_path)) == 10_000
    # Generous: an append is a list append under a lock; a wait on the disk would be seconds.
    assert elapsed < 2.0


def test_unfinished_files_of_dead_processes_are_removed_at_start(
    tmp_path: Path, contract: Contract, features: list[str]
) -> None:
    pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have it
    stale = tmp_path / f"predictions-20260101T000000000000Z-{pid}-00001.parquet.inprogress"
    stale.write_bytes(b"PAR1 half a file")
    mine = tmp_path / "predictions-20260101T000000000000Z-1-00001.parquet.inprogress"  # pid 1 lives
    mine.write_bytes(b"PAR1")
    # The same dead pid on this host, in today's names; and on another pod sharing the volume,
    # where a pid of this machine says nothing: that file is another server's, still writing.
    here = tmp_path / f"predictions-20260101T000000000000Z-{HOST}.{pid}-00002.parquet.inprogress"
    here.write_bytes(b"PAR1 half a file")
    other = tmp_path / f"predictions-20260101T000000000000Z-api_7f9c.{pid}-00001.parquet.inprogress"
    other.write_bytes(b"PAR1 another pod's file")
    log = PredictionLog(
        PredictionLogConfig(dir=tmp_path), tmp_path, contract, features, CountingMetrics()
    )
    log.start()
    log.close()
    assert not stale.exists() and not here.exists()
    assert mine.exists() and other.exists()
