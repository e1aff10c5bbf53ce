"""The console's data: one unreadable version does not hide the others; a cleared cache is not
refilled by a read that began before the clear; a verification that fails is said, not
retried on every page load."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.paths import REPO

from plumbline.governance.trail import AuditTrail
from plumbline.monitoring.console import view
from plumbline.monitoring.monitor import Snapshot
from plumbline.monitoring.settings import load_params


class FakeRegistry:
    name = "m"

    def aliases(self) -> dict[str, str]:
        return {"champion": "1", "challenger": "2"}

    def history(self) -> list[Any]:
        return []


def test_an_unreadable_version_is_shown_with_its_error_beside_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def details(registry: Any, version: str, repos: list[Path]) -> dict[str, Any]:
        if version == "2":
            raise LookupError("version 2 was deleted")
        return {"version": version, "metrics": {}, "gate": "passed", "commit": "c", "card": ""}

    monkeypatch.setattr(view, "version_details", details)
    sources = view.Sources(
        params=load_params(REPO / "params.yaml"),
        trail=AuditTrail(f"sqlite:///{tmp_path / 'g.sqlite'}"),
        registry=FakeRegistry,
        snapshot=Snapshot,
        rollout_report=dict,
        server_rollout=dict,
    )
    models = view._models(sources, view.VersionCache())
    by_version = {v["version"]: v for v in models["versions"]}
    assert by_version["1"]["gate"] == "passed" and "error" not in by_version["1"]
    assert by_version["2"]["error"] == "LookupError: version 2 was deleted"
    assert by_version["2"]["roles"] == ["challenger"]


def test_a_clear_during_a_read_wins_over_the_read_s_older_result() -> None:
    cache = view.VersionCache(ttl_s=60)
    started, release = threading.Event(), threading.Event()

    def slow() -> dict[str, Any]:
        started.set()
        release.wait(5)
        return {"stale": True}

    reader = threading.Thread(target=cache.get, args=("1", slow))
    reader.start()
    started.wait(5)
    cache.clear()  # an approval moved the champion meanwhile
    release.set()
    reader.join(5)
    assert cache.get("1", lambda: {"fresh": True}) == {"fresh": True}


def test_a_failing_verification_is_reported_with_its_time(tmp_path: Path) -> None:
    trail = AuditTrail(f"sqlite:///{tmp_path / 'g.sqlite'}")
    calls: list[float] = []

    def broken() -> Any:
        calls.append(time.time())
        raise OSError("disk I/O error")

    trail.verify = broken  # type: ignore[method-assign]
    verifier = view.Verifier(trail, interval_s=3600)
    verifier.start()
    deadline = time.monotonic() + 5
    while verifier.at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    result, at, error = verifier.latest()
    assert result is None and at is not None and error == "OSError: disk I/O error"
    verifier.latest()
    verifier.stop()
    assert len(calls) == 1  # once per interval, not once per page load
