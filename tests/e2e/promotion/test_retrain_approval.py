"""An automatic retrain with ``promotion.approvals.required: 1``: the candidate passes the gate
and waits as ``pending_approval``; ``@champion`` and the server's answers stay on the old
version until an approver (not the retrain's author, ``monitor``) approves it over the
monitor's ``POST /approvals/{version}/approve``; then the champion moves and the server
hot-reloads it.

The real server and monitor processes on a copy of the monitoring tests' small project.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.monitoring import (
    MonitorProcess,
    Project,
    live_records,
    user_token,
    wait_for,
    write_log,
)
from support.params import set_params

pytestmark = pytest.mark.slow

LIVE = 600


@pytest.fixture()
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    overrides = {
        "gate": {"max_regression": 1.0},
        "promotion": {"approvals": {"required": 1}},
        # The window's test split is too small for the retrain gate's paired interval
        # (see test_demo_loop.py): judged by the project's loose gate.
        "retrain": {
            "min_new_labels": 100,
            "gate": None,
            "comparison": {"enabled": False},
            "window": {"live_rows": LIVE, "history_rows": 500, "min_live_rows": 100},
        },
    }
    project = Project(tmp_path_factory.mktemp("approval") / "project", overrides)
    # The first champion as today (required 0 for set-up), then approvals required.
    set_params(project.root, **{"promotion.approvals.required": 0})
    project.promote_current()
    set_params(project.root, **{"promotion.approvals.required": 1})
    yield project


def test_a_retrain_waits_for_an_approval_before_the_champion_moves(project: Project) -> None:
    registry = project.registry()
    records, outcomes = live_records(0, LIVE)
    ids = [f"live-{i}" for i in range(LIVE)]
    write_log(project.log_dir, ids, records, [0.5] * LIVE, "1")
    with project.server() as server, MonitorProcess(project) as monitor:
        server.wait("/ready")
        assert server.post(records[0]).json()["model_version"] == "1"
        monitor.refresh()
        answer = monitor.feedback(
            [{"request_id": i, "outcome": y} for i, y in zip(ids, outcomes, strict=True)]
        )
        assert answer.status_code == 200, answer.text
        fired = {
            "status": "firing",
            "alerts": [{"status": "firing", "labels": {"alertname": "PlumblineDataDrift"}}],
        }
        started = monitor.post("/alerts", fired).json()
        assert started["outcome"] == "started", started

        def retrain_done() -> dict[str, object] | None:
            runs = monitor.status()["retrains"]
            return runs[0] if runs and runs[0]["status"] != "running" else None

        run = wait_for(retrain_done, 600, "the retrain to finish", every=2, details=monitor.log)
        assert run["status"] == "pending_approval", run
        assert run["version"] == "2", run
        assert run["champion_after"] in (None, "1"), run

        # Nothing moved: the champion and the server's answers stay on version 1.
        assert registry.alias_version("champion") == "1"
        assert registry.alias_version("challenger") == "2"
        status = monitor.status()
        assert [p["version"] for p in status["approvals"]["pending"]] == ["2"], status
        assert server.post(records[1]).json()["model_version"] == "1"

        # GET /approvals: a viewer's route; the candidate with its evidence, by the monitor.
        assert requests.get(monitor.url + "/approvals", timeout=30).status_code == 401
        listed = requests.get(monitor.url + "/approvals", headers=monitor.auth, timeout=30)
        assert listed.status_code == 200, listed.text
        pending = listed.json()["pending"]
        assert [(p["version"], p["author"], p["missing"]) for p in pending] == [
            ("2", "monitor", 1)
        ], pending
        assert pending[0]["champion_at_gate"] == "1"
        assert pending[0]["evidence"]["gate"]["passed"] is True

        def approve(token: str, comment: str = "gate table and slices reviewed") -> Any:
            return requests.post(
                monitor.url + "/approvals/2/approve",
                json={"comment": comment},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )

        # The operator may not approve; the author (an approver named monitor) neither.
        assert approve(monitor.token).status_code == 403
        refused = approve(
            user_token(project.root, project.params, "monitor", "approver"), "my own retrain"
        )
        assert refused.status_code == 403, refused.text
        assert "separation of duties" in refused.json()["detail"]
        assert registry.alias_version("champion") == "1"

        done = approve(user_token(project.root, project.params, "alice", "approver"))
        assert done.status_code == 200, done.text
        decision = done.json()
        assert decision["outcome"] == "promoted", decision
        assert (decision["champion_before"], decision["champion_after"]) == ("1", "2")
        assert decision["approvals"] == ["alice"]
        assert registry.alias_version("champion") == "2"

        wait_for(
            lambda: server.post(records[2]).json()["model_version"] == "2",
            60,
            "the server to serve version 2",
            details=lambda: server.log()[-3000:],
        )
        assert monitor.status()["approvals"]["pending"] == []

    last = registry.history()[-1]
    assert (last.action, last.from_version, last.to_version) == ("promote", "1", "2")

    from plumbline.governance.trail import AuditTrail
    from plumbline.monitoring.settings import load_params

    trail = AuditTrail.for_project(load_params(project.params).audit, project.root)
    try:
        ends = [r for r in trail.records() if r.action == "retrain_end"]
        starts = [r for r in trail.records() if r.action == "retrain_start"]
        assert len(starts) == len(ends) == 1
        assert ends[0].subject["status"] == "pending_approval" and ends[0].actor == "monitor"
        assert ends[0].subject["version"] == "2"
        assert trail.verify().ok
    finally:
        trail.close()
