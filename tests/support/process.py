"""One helper for every program the tests start: the server, the monitor, Prometheus,
Alertmanager. Output goes to a log file in the process's directory; a failing wait shows it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from support.net import free_port


class Process:
    """A subprocess listening on a free loopback port; stopped with SIGTERM, then SIGKILL,
    and nothing of it outlives the test."""

    name = "process"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def cwd(self) -> Path:
        return self.directory

    def start(self) -> Any:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=self.cwd(),
            env=self.env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, path: str, status: int = 200, timeout: float = 60) -> requests.Response:
        """Poll ``path`` until it answers ``status``; fails early if the process exits."""
        deadline = time.monotonic() + timeout
        last: requests.Response | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}):\n{self.log()[-4000:]}"
                )
            with contextlib.suppress(requests.RequestException):
                last = requests.get(self.url + path, timeout=2)
                if last.status_code == status:
                    return last
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name} {path} did not answer {status} in {timeout}s (last: "
            f"{getattr(last, 'status_code', None)}):\n{self.log()[-4000:]}"
        )

    def processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, as Kubernetes and docker stop send it; SIGKILL after ``timeout``.
        Returns the exit code."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(10)
        finally:
            if self._log is not None:
                self._log.close()

    def kill_all(self) -> None:
        """Last resort after a failed test: nothing of this process may outlive the test."""
        if self.proc is None:
            return
        try:
            procs = self.processes()
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait(10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            self.kill_all()
