"""Start-up without a model, and shutdown on SIGTERM: every process gone, no request lost."""

from __future__ import annotations

import json
import signal
import socket
import time

import psutil
import pyarrow.parquet as pq
import requests
from support.serve import Server, artifacts, records, session_dir


def test_without_registry_or_fallback_it_is_alive_but_not_ready() -> None:
    directory = session_dir() / "not-ready"
    missing = f"sqlite:///{directory / 'no-such-store.db'}"
    with Server(directory, missing, fallback_artifact=None, poll_interval_s=0.5) as server:
        server.wait("/health", 200)
        deadline = time.monotonic() + 30
        while "not ready:" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        ready = server.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert "does not exist" in ready.json()["error"]
        bank = artifacts()
        response = server.post(records(bank.test_frame().head(1), bank.features)[0])
        assert response.status_code == 503
        assert server.get("/health").status_code == 200
        assert (directory / "no-such-store.db").exists() is False  # no empty store made


def _start_request(port: int, body: bytes, held_back: int) -> socket.socket:
    """Send an HTTP request but the last ``held_back`` bytes of its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:-held_back])
    return sock


def _finish_request(sock: socket.socket, rest: bytes) -> tuple[int, bytes]:
    sock.sendall(rest)
    chunks = []
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def test_sigterm_finishes_in_flight_requests_and_leaves_no_process() -> None:
    bank = artifacts()
    rows = records(bank.test_frame(), bank.features)
    big = (rows * (10_000 // len(rows) + 1))[:10_000]
    body = json.dumps(big).encode()  # ~4 MB: bigger than the socket buffers
    directory = session_dir() / "shutdown"
    server = Server(
        directory, f"sqlite:///{directory / 'none.db'}", fallback_artifact=str(bank.model)
    ).start()
    try:
        server.wait("/ready")
        processes = server.processes()
        assert len(processes) >= 5  # main, manager, 2 HTTP, 1 worker (+ resource tracker)
        # Requests whose bodies are still arriving when SIGTERM comes: in flight for sure.
        held_back = 4096
        socks = [_start_request(server.port, body, held_back) for _ in range(3)]
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        time.sleep(0.3)
        results = [_finish_request(sock, body[-held_back:]) for sock in socks]
        assert server.stop(timeout=60) == 0

        assert len(results) == 3
        for status, answer in results:
            assert status == 200, answer[:300]
            assert len(json.loads(answer)) == 10_000
        _, alive = psutil.wait_procs(processes, timeout=10)
        assert alive == [], [p.info for p in alive]
        try:
            requests.get(server.url + "/health", timeout=2)
            raise AssertionError("/health still answers after shutdown")
        except requests.ConnectionError:
            pass
    finally:
        server.kill_all()

    # The prediction log was flushed and finished on the way out.
    log_dir = directory / "predictions"
    assert list(log_dir.glob("*.inprogress")) == []
    table = pq.read_table(sorted(log_dir.glob("predictions-*.parquet")))
    assert table.num_rows >= 3 * 10_000
    assert "stopped" in server.log()
