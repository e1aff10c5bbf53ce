"""The real server with its prediction log on a full filesystem (a small tmpfs, mounted for the
test): answers are unaffected, the rows wait in memory and land once space is freed, rows
dropped past a (forced low) buffer limit equal the counter, and no empty or partial file is
left. Needs the right to mount (root, as here and in CI); the writer's fault handling itself is
covered without it by tests/unit/serving/test_predlog_writer_faults.py."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from support.serve import Artifacts, Server, artifacts, metric_value, records, session_dir

from plumbline.model.artifact import load_model, positive_proba

REQUESTS = 300


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "512k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def finished_rows(directory: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in directory.glob("predictions-*.parquet"))


def metric(server: Server, name: str) -> float:
    return metric_value(server.get("/metrics").text, name)


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture(scope="module")
def bank() -> Artifacts:
    return artifacts()


def _score(server: Server, bank: Artifacts) -> None:
    test = bank.test_frame().head(REQUESTS)
    rows = records(test, bank.features)
    expected = positive_proba(load_model(bank.model), test[bank.features])

    def one(i: int) -> float:
        r = requests.post(
            server.url + "/predict", json=rows[i], timeout=30, headers={"X-Request-ID": f"r{i}"}
        )
        assert r.status_code == 200, r.text
        return float(r.json()["probability"])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(REQUESTS)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)  # served answers unaffected


def _server(bank: Artifacts, name: str, log_dir: Path, **log: object) -> Server:
    directory = session_dir() / name
    srv = Server(
        directory,
        f"sqlite:///{directory / 'none.db'}",
        fallback_artifact=str(bank.model),
        prediction_log={"rotate_rows": 100, "retry_max_s": 0.5, **log},
    )
    # The log goes to the small filesystem, the rest of the test server's files do not.
    text = srv.params.read_text().replace(str(directory / "predictions"), str(log_dir))
    srv.params.write_text(text)
    return srv


def test_full_disk_then_space_freed(bank: Artifacts, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small") as small:
        log_dir = small / "predictions"
        log_dir.mkdir()
        with _server(bank, "disk-full", log_dir) as server:
            server.wait("/ready", timeout=90)
            filler = fill(small)
            _score(server, bank)
            wait_for(
                lambda: metric(server, "plumbline_prediction_log_write_failures_total") >= 2,
                30,
                "no write failure counted",
            )
            assert finished_rows(log_dir) < REQUESTS
            assert metric(server, "plumbline_prediction_log_dropped_rows_total") == 0
            filler.unlink()  # space is back
            wait_for(lambda: finished_rows(log_dir) >= 200, 30, "held rows not written")
            assert server.stop() == 0
        table = pq.read_table(sorted(log_dir.glob("predictions-*.parquet"))).to_pandas()
        assert sorted(table["request_id"]) == sorted(f"r{i}" for i in range(REQUESTS))
        assert list(log_dir.glob("*.inprogress")) == []
        assert all(f.stat().st_size > 0 for f in log_dir.iterdir())
        assert "rows kept in memory, retrying" in server.log()


def test_full_disk_with_a_small_buffer_counts_every_dropped_row(
    bank: Artifacts, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "small") as small:
        log_dir = small / "predictions"
        log_dir.mkdir()
        with _server(bank, "disk-full-drop", log_dir, max_pending_rows=100) as server:
            server.wait("/ready", timeout=90)
            filler = fill(small)
            _score(server, bank)
            wait_for(
                lambda: metric(server, "plumbline_prediction_log_dropped_rows_total") > 0,
                30,
                "no dropped row counted",
            )
            filler.unlink()
            # Stop once the held rows landed (or right away: shutdown writes them too).
            wait_for(lambda: finished_rows(log_dir) >= 100, 30, "held rows not written")
            dropped = metric(server, "plumbline_prediction_log_dropped_rows_total")
            assert server.stop() == 0
        written = finished_rows(log_dir)
        assert 0 < dropped < REQUESTS
        assert written + dropped == REQUESTS  # every row is either in the log or counted
        assert list(log_dir.glob("*.inprogress")) == []
