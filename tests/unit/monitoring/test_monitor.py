"""Refreshes of the monitor's snapshot: the background loop's and POST /refresh's may overlap,
and the snapshot a scrape sees must never go back to figures from before a newer refresh."""

from __future__ import annotations

import threading
from pathlib import Path

from support.paths import BANK_CONTRACT, REPO

from plumbline.core.contract import load_contract
from plumbline.monitoring.monitor import Monitor, Snapshot
from plumbline.monitoring.settings import load_params


def test_an_older_refresh_never_replaces_a_newer_snapshot(tmp_path: Path) -> None:
    monitor = Monitor(load_params(REPO / "params.yaml"), load_contract(BANK_CONTRACT), tmp_path)
    monitor.log_dir.mkdir(parents=True, exist_ok=True)
    in_compute, release = threading.Event(), threading.Event()
    computed = iter([{"stored": 0}, {"stored": 251}])  # before and after a feedback post

    def compute() -> Snapshot:
        feedback = next(computed)
        if feedback["stored"] == 0:  # the background refresh, slow to finish
            in_compute.set()
            assert release.wait(30)
        return Snapshot(feedback=feedback)

    monitor._compute = compute  # type: ignore[method-assign]
    background = threading.Thread(target=monitor.refresh)
    background.start()
    assert in_compute.wait(30)
    requested = threading.Thread(target=monitor.refresh)  # POST /refresh after the post
    requested.start()
    requested.join(0.5)  # it may finish first (it must then stay the one published) or wait
    release.set()
    background.join(30)
    requested.join(30)
    assert not background.is_alive() and not requested.is_alive()
    assert monitor.snapshot.feedback == {"stored": 251}
