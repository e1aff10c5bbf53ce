"""Faults of the real server's processes under concurrent load: ``kill -9`` of the scoring
worker and of an HTTP process. The server replaces them without restarting; no answer is
wrong, every failed request is a 503 with Retry-After, and no child is left a zombie."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import pytest
import requests
from support.serve import (
    Artifacts,
    Server,
    artifacts,
    make_store,
    metric_value,
    records,
    session_dir,
)

from plumbline.model.artifact import load_model, positive_proba

RECOVERY_S = 15


@pytest.fixture(scope="module")
def bank() -> Artifacts:
    return artifacts()


@pytest.fixture(scope="module")
def server(bank: Artifacts) -> Iterator[Server]:
    directory = session_dir() / "supervision"
    store = make_store(directory / "store", {"v1": bank.model})
    with Server(directory, store.uri, fallback_artifact=None, poll_interval_s=30) as srv:
        srv.wait("/ready", timeout=90)
        # A crash in production comes long after the start: by then the main process has
        # preloaded what a replacement worker imports (it does so right after the start).
        deadline = time.monotonic() + 120
        while "imports of a replacement worker preloaded" not in srv.log():
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.2)
        yield srv


@dataclass
class Load:
    """``clients`` threads posting single records until stopped; every answer is kept."""

    url: str
    rows: list[dict[str, Any]]
    expected: np.ndarray
    clients: int = 8
    answers: list[tuple[int, int, dict[str, str], Any]] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, offset: int) -> None:
        session = requests.Session()
        i = offset
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            index = i % len(self.rows)
            i += self.clients
            try:
                r = session.post(self.url + "/predict", json=self.rows[index], timeout=30)
            except requests.ConnectionError as err:
                self.resets.append(repr(err))
                session = requests.Session()
                continue
            body = (
                r.json()
                if r.headers.get("content-type", "").startswith("application/json")
                else r.text
            )
            headers = {k.lower(): v for k, v in r.headers.items()}
            self.answers.append((index, r.status_code, headers, body))

    def __enter__(self) -> Load:
        for k in range(self.clients):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def count(self) -> int:
        return len(self.answers)


def _bound_to(server: Server, suffix: str) -> psutil.Process:
    """The server process that has bound the ZeroMQ socket ``.../<suffix>``."""
    for proc in server.processes():
        try:
            for conn in proc.net_connections(kind="unix"):
                if isinstance(conn.laddr, str) and conn.laddr.endswith("/" + suffix):
                    return proc
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no server process has bound {suffix}")


def _wait_ready_cycle(server: Server, reason: str) -> tuple[float, list[str]]:
    """Seconds until /ready is 200 again, having seen its 503s (with their reasons)."""
    started = time.monotonic()
    reasons: list[str] = []
    while time.monotonic() - started < RECOVERY_S:
        r = requests.get(server.url + "/ready", timeout=5)
        if r.status_code == 503:
            reasons.append(str(r.json().get("error")))
        elif r.status_code == 200 and reasons:
            return time.monotonic() - started, reasons
        elif r.status_code == 200 and time.monotonic() - started > 2:
            break  # never saw it missing
        time.sleep(0.05)
    raise AssertionError(
        f"/ready did not go 503 ({reason}) and back to 200 in {RECOVERY_S}s: {reasons[-3:]}"
        f"\n{server.log()[-3000:]}"
    )


def _zombies(server: Server) -> list[psutil.Process]:
    out = []
    for p in server.processes():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_kill_9_of_the_scoring_worker_under_load(server: Server, bank: Artifacts) -> None:
    test = bank.test_frame()
    rows = records(test, bank.features)
    expected = positive_proba(load_model(bank.model), test[bank.features])
    main_pid = server.proc.pid  # type: ignore[union-attr]
    worker = _bound_to(server, "req-predict-0")
    with Load(server.url, rows, expected) as load:
        deadline = time.monotonic() + 30
        while load.count() < 200:
            assert time.monotonic() < deadline, "no load"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        recovered_in, reasons = _wait_ready_cycle(server, "worker killed")
        served_before = load.count()
        deadline = time.monotonic() + 30
        while load.count() < served_before + 200:  # it serves again, under the same load
            assert time.monotonic() < deadline, "no answers after recovery"
            time.sleep(0.05)

    assert server.proc.poll() is None and server.proc.pid == main_pid  # type: ignore[union-attr]
    assert recovered_in < RECOVERY_S
    assert any("killed by SIGKILL" in r for r in reasons), reasons
    assert load.resets == []  # no connection was reset
    statuses = {status for _, status, _, _ in load.answers}
    assert statuses <= {200, 503}, statuses
    failed = [a for a in load.answers if a[1] == 503]
    assert failed, "the kill failed no request at all: was the worker holding none?"
    for _, _, headers, body in failed:
        assert headers.get("retry-after") == "1", headers
        assert "detail" in body
    ok = [(i, body) for i, status, _, body in load.answers if status == 200]
    got = np.array([body["probability"] for _, body in ok])
    np.testing.assert_allclose(got, expected[[i for i, _ in ok]], rtol=0, atol=1e-9)
    assert {body["model_version"] for _, body in ok} == {"1"}
    new_worker = _bound_to(server, "req-predict-0")
    assert new_worker.pid != worker.pid
    metrics = server.get("/metrics").text
    assert metric_value(metrics, "plumbline_worker_restarts_total", role="inference") == 1
    assert _zombies(server) == []


def test_kill_9_of_an_http_process(server: Server, bank: Artifacts) -> None:
    http = _bound_to(server, "resp-1")
    before = metric_value(
        server.get("/metrics").text, "plumbline_worker_restarts_total", role="http"
    )
    os.kill(http.pid, signal.SIGKILL)
    deadline = time.monotonic() + RECOVERY_S
    while True:
        try:
            replacement = _bound_to(server, "resp-1")
            if replacement.pid != http.pid:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)
    record = records(bank.test_frame().head(1), bank.features)[0]
    answers = [requests.post(server.url + "/predict", json=record, timeout=30) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    server.wait("/ready")
    after = metric_value(
        server.get("/metrics").text, "plumbline_worker_restarts_total", role="http"
    )
    assert after == before + 1
    assert _zombies(server) == []


def test_sigterm_still_stops_everything(server: Server) -> None:
    processes = server.processes()
    assert server.stop(timeout=60) == 0
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == []
