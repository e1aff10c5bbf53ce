"""``plumbline bootstrap``'s steps: with ``--outputs-only`` (the monitor's workspace on
Kubernetes) it lays out the project and runs `dvc repro`, and never gates or promotes."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from plumbline.promotion import first_champion


def test_outputs_only_lays_out_and_reproduces_without_touching_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, root = tmp_path / "image", tmp_path / "workspace"
    (source / "contracts").mkdir(parents=True)
    (source / "dvc.yaml").write_text("stages: {}\n")
    (source / "contracts/c.yaml").write_text("name: c\n")
    ran: list[list[str]] = []

    def run(argv: list[str], root: Path, env: dict[str, str], check: bool = True) -> int:
        ran.append(argv[2:])  # without "<python> -m"
        return 0

    monkeypatch.setattr(first_champion, "_run", run)
    assert first_champion.bootstrap(root, source, outputs_only=True) is None
    assert (root / "contracts/c.yaml").read_text() == "name: c\n"
    assert ran == [["dvc", "config", "--local", "core.no_scm", "true"], ["dvc", "repro"]]


class _Answer:
    status = 200

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_waits_for_the_tracking_server_to_answer_health(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that starts bootstrap before MLflow is healthy (podman 4.3 runs no health
    checks) must not fail the run: bootstrap retries /health until it answers."""
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> Any:
        asked.append(url)
        if len(asked) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return _Answer()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    waited = first_champion.wait_for_tracking_server("http://mlflow:5000/", 60, interval_s=0)
    assert waited is not None and asked == ["http://mlflow:5000/health"] * 3
    # A local store needs no server.
    assert first_champion.wait_for_tracking_server("sqlite:///mlflow.db", 60) is None
    assert first_champion.wait_for_tracking_server(None, 60) is None


def test_gives_up_naming_the_server_and_the_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def urlopen(url: str, timeout: float) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(first_champion.BootstrapError, match=r"http://mlflow:5000 did not answer"):
        first_champion.wait_for_tracking_server("http://mlflow:5000", 0, interval_s=0)
