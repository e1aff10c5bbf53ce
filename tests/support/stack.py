"""The compose stack in real containers: podman, the project's containers.conf, podman-compose.

``Engine`` runs podman and podman-compose for one compose project and drives the health checks
that podman cannot run by itself here: without systemd it starts no timers for them, so a
container's health stays ``starting`` until someone runs ``podman healthcheck run``. The
``HealthDriver`` thread does that every few seconds, as the timer would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from support.paths import REPO

CONTAINERS_CONF = REPO / "deploy/podman/containers.conf"
STANDINS = REPO / "deploy/podman/compose.standins.yml"
TEAMS_STANDINS = REPO / "deploy/podman/compose.teams-standins.yml"
BUILD_IMAGES = REPO / "deploy/podman/build-images.sh"
COMPOSE_FILES = (REPO / "docker-compose.yml", STANDINS)
TEAMS_COMPOSE_FILES = (
    REPO / "docker-compose.yml",
    REPO / "docker-compose.teams.yml",
    STANDINS,
    TEAMS_STANDINS,
)
# Every service but Grafana, which has no Debian package to build a stand-in from.
SERVICES = ("mlflow", "bootstrap", "api", "monitor", "prometheus", "alertmanager")
PROJECT_LABEL = "io.podman.compose.project"
TAG = "0.1.0"


def engine_env() -> dict[str, str]:
    return dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))


def wait_for(what: str, check: Any, timeout_s: float, engine: Engine | None = None) -> Any:
    """``check()``'s first truthy answer, polled every second; fails naming ``what``, the
    last answer or error, and the engine's last commands."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, ValueError, KeyError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(1)
    detail = "\n".join(engine.log[-4:]) if engine else ""
    raise AssertionError(f"{what}: not within {timeout_s:g} s (last: {last!r})\n{detail}")


def taken_ports(*ports: int) -> list[int]:
    """Those of ``ports`` something on 127.0.0.1 already answers on (the stack publishes
    there)."""
    taken = []
    for port in ports:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
        except requests.ConnectionError:
            continue
        taken.append(port)
    return taken


@dataclass
class Engine:
    project: str
    files: Sequence[Path] = COMPOSE_FILES
    # Variables for the compose files (what a user's .env holds).
    env: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def podman(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        done = subprocess.run(
            ["podman", *args],
            env=engine_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout

    def compose(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        argv = [str(Path(sys.executable).parent / "podman-compose"), "-p", self.project]
        for path in self.files:
            argv += ["-f", str(path)]
        started = time.monotonic()
        done = subprocess.run(
            [*argv, *args],
            cwd=REPO,
            env={**engine_env(), **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.log.append(
            f"$ podman-compose {' '.join(args)}  (exit {done.returncode}, "
            f"{time.monotonic() - started:.0f} s)\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
        return done

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def inspect(self, service: str) -> dict[str, Any]:
        (found,) = json.loads(self.podman("inspect", self.container(service)))
        return dict(found)

    def wait_exited(self, service: str, timeout_s: float) -> int:
        """Wait for a one-shot service to exit; its exit code."""
        wait_for(
            f"{service} exits",
            lambda: self.inspect(service)["State"]["Status"] == "exited",
            timeout_s,
            self,
        )
        return self.exit_code(service)

    def exit_code(self, service: str) -> int:
        return int(self.inspect(service)["State"]["ExitCode"])

    def logs(self, service: str) -> str:
        done = subprocess.run(
            ["podman", "logs", self.container(service)],
            env=engine_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout + done.stderr

    def exec(self, service: str, *argv: str) -> str:
        return self.podman("exec", self.container(service), *argv, timeout=120)

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        health = state.get("Health") or state.get("Healthcheck") or {}
        return str(health.get("Status", ""))

    def cleanup(self) -> None:
        """Remove everything of the project, whatever state a failure left it in."""
        self.compose("down", "-v", "--timeout", "30", timeout=300)
        label = f"label={PROJECT_LABEL}={self.project}"
        for name in self.podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").split():
            self.podman("rm", "-f", "-t", "5", name, check=False)
        for kind in ("volume", "network", "pod"):
            for name in self.podman(kind, "ls", "--format", "{{.Name}}", check=False).split():
                if self.project in name:
                    self.podman(kind, "rm", "-f", name, check=False)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, pods, volumes and networks of this project still present."""
        label = f"label={PROJECT_LABEL}={self.project}"
        out = {
            "containers": self.podman("ps", "-a", "--filter", label, "--format", "{{.Names}}"),
            "volumes": self.podman("volume", "ls", "--filter", label, "--format", "{{.Name}}"),
            "networks": self.podman("network", "ls", "--format", "{{.Name}}"),
            "pods": self.podman("pod", "ls", "--format", "{{.Name}}"),
        }
        return {
            kind: [line for line in text.split() if self.project in line]
            for kind, text in out.items()
        }


class HealthDriver(threading.Thread):
    """Runs every running container's health check of the project every ``interval_s``: what
    the systemd timer podman sets up elsewhere would do."""

    def __init__(self, engine: Engine, interval_s: float = 5.0) -> None:
        super().__init__(daemon=True, name="podman-healthchecks")
        self.engine = engine
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.runs = 0

    def run(self) -> None:
        label = f"label={PROJECT_LABEL}={self.engine.project}"
        while not self.stopped.wait(self.interval_s):
            try:
                names = self.engine.podman(
                    "ps", "--filter", label, "--format", "{{.Names}}", check=False, timeout=30
                ).split()
                for name in names:
                    # A container without a health check answers with an error: ignored.
                    self.engine.podman("healthcheck", "run", name, check=False, timeout=30)
                    self.runs += 1
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=60)
