"""Delayed labels: outcomes posted to the monitor are joined to the server's prediction log,
pending ids (no logged prediction yet) and duplicates are reported, an outcome posted before its
prediction's log file is finished is matched once the file lands, and live metrics are exactly
those of the joined rows.

The server and the monitor are the real processes on loopback ports; the traffic is real rows
of the late (2010) part of the bank file, scored by a model trained on early (2008) rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from support.monitoring import MonitorProcess, Project, live_records, wait_for
from support.serve import Server, metric_value

ROWS = 250


@dataclass
class Stack:
    project: Project
    server: Server
    monitor: MonitorProcess
    ids: list[str]
    probabilities: list[float]
    outcomes: list[int]
    version: str
    posted: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    project = Project(tmp_path_factory.mktemp("feedback") / "project", {})
    with project.server() as server:
        server.wait("/ready")
        with MonitorProcess(project) as monitor:
            records, labels = live_records(0, ROWS)
            answers = [server.post(r).json() for r in records]
            yield Stack(
                project,
                server,
                monitor,
                [a["request_id"] for a in answers],
                [a["probability"] for a in answers],
                [int(y == "yes") for y in labels],
                answers[0]["model_version"],
            )


def labelled(stack: Stack) -> dict[str, Any]:
    """Post the outcomes of every request once (plus an id never logged, a duplicate and a
    conflicting duplicate); the answer and the monitor's metrics before and after."""
    if stack.posted:
        return stack.posted
    wait_for(
        lambda: stack.monitor.refresh()["stored_rows"] == ROWS,
        30,
        "the server's log files to reach the monitor",
    )
    items = [
        {"request_id": rid, "row": 0, "outcome": "yes" if y else "no"}
        for rid, y in zip(stack.ids, stack.outcomes, strict=True)
    ]
    items.append({"request_id": "never-predicted", "outcome": 1})  # pending, for good
    items.append({"request_id": stack.ids[1], "row": 0, "outcome": stack.outcomes[1]})
    items.append({"request_id": stack.ids[2], "outcome": 1 - stack.outcomes[2]})  # conflict
    before = stack.monitor.metrics()
    response = stack.monitor.feedback({"outcomes": items})
    assert response.status_code == 200, response.text
    stack.monitor.refresh()
    stack.posted = {
        "items": items,
        "body": response.json(),
        "before": before,
        "after": stack.monitor.metrics(),
    }
    return stack.posted


def delta(posted: dict[str, Any], name: str, **labels: str) -> float:
    return metric_value(posted["after"], name, **labels) - metric_value(
        posted["before"], name, **labels
    )


def test_outcomes_join_and_pending_ids_and_duplicates_are_reported(stack: Stack) -> None:
    posted = labelled(stack)
    body = posted["body"]
    assert body["received"] == ROWS + 3
    assert body["matched"] == ROWS and body["accepted"] == ROWS + 1
    assert body["pending"] == 1 and body["pending_ids"] == [
        {"request_id": "never-predicted", "row": 0}
    ]
    assert "unknown" not in body and "unknown_ids" not in body
    assert body["duplicates"] == 2 and body["conflicts"] == 1
    assert {(d["request_id"], d["conflict"]) for d in body["duplicate_ids"]} == {
        (stack.ids[1], False),
        (stack.ids[2], True),
    }
    assert delta(posted, "plumbline_feedback_outcomes_total", result="matched") == ROWS
    assert delta(posted, "plumbline_feedback_outcomes_total", result="pending") == 1
    assert 'result="unknown"' not in posted["after"]
    assert delta(posted, "plumbline_feedback_outcomes_total", result="duplicate") == 2
    assert delta(posted, "plumbline_feedback_conflicts_total") == 1
    assert delta(posted, "plumbline_feedback_pending") == 1
    assert delta(posted, "plumbline_feedback_stored") == ROWS + 1
    # The same again: everything is a duplicate now, nothing is stored twice.
    before = stack.monitor.metrics()
    again = stack.monitor.feedback(posted["items"][:10]).json()
    assert again["duplicates"] == 10 and again["matched"] == again["pending"] == 0
    stack.monitor.refresh()
    after = stack.monitor.metrics()
    for name in ("plumbline_feedback_stored", "plumbline_feedback_pending"):
        assert metric_value(after, name) == metric_value(before, name)
    assert (
        metric_value(after, "plumbline_feedback_outcomes_total", result="duplicate")
        - metric_value(before, "plumbline_feedback_outcomes_total", result="duplicate")
        == 10
    )


def test_an_outcome_posted_right_after_its_prediction_is_pending_then_matched(
    tmp_path: Path,
) -> None:
    """A client posts the outcome as soon as it has the answer, while the prediction still sits
    in the server's unfinished log file: the monitor answers pending, keeps it, and matches it
    once the file is finished and read, without the client posting again."""
    rotate_s = 8.0  # long enough that the post surely comes before the file is finished
    project = Project(tmp_path / "project", {"serve": {"prediction_log": {"rotate_s": rotate_s}}})
    with project.server() as server:
        server.wait("/ready")
        with MonitorProcess(project) as monitor:
            records, labels = live_records(0, 1)
            answer = server.post(records[0]).json()
            outcome = int(labels[0] == "yes")
            item = {"request_id": answer["request_id"], "outcome": outcome}
            body = monitor.feedback(item).json()
            # The answer came before the file was finished (and so before the monitor saw it).
            assert not list(project.log_dir.glob("predictions-*.parquet"))
            assert (body["matched"], body["pending"], body["accepted"]) == (0, 1, 1)
            assert body["pending_ids"] == [{"request_id": answer["request_id"], "row": 0}]
            monitor.refresh()
            waiting = monitor.metrics()
            assert metric_value(waiting, "plumbline_feedback_outcomes_total", result="pending") == 1
            assert metric_value(waiting, "plumbline_feedback_pending") == 1

            status = wait_for(
                lambda: (s := monitor.refresh())["feedback"]["joined"] == 1 and s,
                rotate_s + 30,
                "the prediction's log file to land and be joined",
                details=lambda: str(monitor.status()["feedback"]),
            )
            assert status["feedback"] == {"stored": 1, "joined": 1, "pending": 0, "pruned": 0}
            assert [(v["rows"], v["labelled"]) for v in status["versions"]] == [(1, 1)]
            matched = monitor.metrics()
            assert metric_value(matched, "plumbline_feedback_pending") == 0
            assert "plumbline_feedback_pending " in matched  # exported, not merely absent
            # It was stored once: posting it again is a duplicate of the kept outcome.
            again = monitor.feedback(item).json()
            assert (again["duplicates"], again["conflicts"], again["pending"]) == (1, 0, 0)
            assert again["duplicate_ids"][0]["kept_outcome"] == outcome


def test_live_metrics_are_those_of_the_joined_rows(stack: Stack) -> None:
    labelled(stack)
    status = wait_for(lambda: (s := stack.monitor.refresh())["live"] and s, 30, "live metrics")
    y = np.array(stack.outcomes)
    p = np.array(stack.probabilities)
    live = status["live"]
    assert live["model_version"] == stack.version and live["rows"] == ROWS
    # The conflicting duplicate did not overwrite the first outcome.
    assert live["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert live["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert live["positive_rate"] == pytest.approx(y.mean(), abs=1e-12)
    assert live["predicted_positive_rate"] == pytest.approx((p >= 0.5).mean(), abs=1e-12)
    metrics = stack.monitor.metrics()
    labels = {"model_version": stack.version}
    assert metric_value(metrics, "plumbline_live_roc_auc", **labels) == pytest.approx(
        roc_auc_score(y, p), abs=1e-9
    )
    assert metric_value(metrics, "plumbline_live_labelled_rows", **labels) == ROWS
    assert metric_value(metrics, "plumbline_model_test_roc_auc", **labels) > 0
    # Late traffic against an early model: the macro-economic features drifted.
    drifted = set(status["drift"]["drifted_features"])
    assert {"euribor3m", "cons.price.idx"} <= drifted
    assert metric_value(metrics, "plumbline_drift_detected", feature="euribor3m") == 1
    assert metric_value(metrics, "plumbline_drift_detected", feature="housing") == 0


def test_outcome_formats_and_invalid_bodies(stack: Stack) -> None:
    fresh = [
        {"request_id": f"format-{i}", "outcome": value}
        for i, value in enumerate(["yes", "no", True, False, 0, 1])
    ]
    body = stack.monitor.feedback(fresh).json()
    assert body["accepted"] == 6 and body["pending"] == 6
    single = stack.monitor.feedback({"request_id": "format-single", "outcome": "no"})
    assert single.status_code == 200 and single.json()["accepted"] == 1

    invalid_before = metric_value(
        stack.monitor.metrics(), "plumbline_feedback_invalid_requests_total"
    )
    bad = stack.monitor.feedback(
        [
            {"request_id": "x", "outcome": "maybe"},
            {"outcome": 1},
            {"request_id": "y", "row": -1, "outcome": 1},
        ]
    )
    assert bad.status_code == 422
    locs = [tuple(d["loc"]) for d in bad.json()["detail"]]
    assert ("body", 0, "outcome") in locs
    assert ("body", 1, "request_id") in locs
    assert ("body", 2, "row") in locs
    assert "maybe" in bad.json()["detail"][0]["msg"]
    import requests

    broken = requests.post(
        stack.monitor.url + "/feedback",
        data=b"{not json",
        headers={"Content-Type": "application/json", **stack.monitor.auth},
        timeout=10,
    )
    assert broken.status_code == 422
    assert stack.monitor.feedback([]).status_code == 422
    # Nothing of the rejected bodies was stored.
    assert not {"x", "y"} & {
        d["request_id"]
        for d in stack.monitor.feedback([{"request_id": "x", "outcome": 1}]).json()["duplicate_ids"]
    }
    assert (
        metric_value(stack.monitor.metrics(), "plumbline_feedback_invalid_requests_total")
        - invalid_before
        == 3
    )


def test_drift_report_on_demand(stack: Stack) -> None:
    labelled(stack)
    out = stack.project.root / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "plumbline",
            "--params",
            str(stack.project.params),
            "drift-report",
            "--output",
            str(out),
        ],
        cwd=stack.project.root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**stack.monitor.env()},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "euribor3m" in done.stdout
    text = (out / "drift.md").read_text()
    assert "| euribor3m | numeric |" in text and "**yes**" in text
    assert f"| {stack.version} | {ROWS} |" in text  # live table: logged rows of the version
    for image in ("drift.png", "live.png"):
        assert f"]({image})" in text
        assert (out / image).stat().st_size > 5000
    data = json.loads((out / "live.json").read_text())
    assert data["snapshot"]["live"]["rows"] == ROWS


def test_live_per_slice_rates_are_exported(stack: Stack) -> None:
    """Positive rate per slice group over the logged rows, TPR/FPR over the labelled ones."""
    labelled(stack)
    status = wait_for(lambda: (s := stack.monitor.refresh())["live"] and s, 30, "live metrics")
    records, _ = live_records(0, ROWS)
    marital = np.array([r["marital"] for r in records])
    age = np.array([r["age"] for r in records])
    pred = np.array(stack.probabilities) >= 0.5
    y = np.array(stack.outcomes)
    metrics = stack.monitor.metrics()
    checked = 0
    for slice_name, groups in (
        ("marital", {g: marital == g for g in set(marital)}),
        ("age_band", {"[25, 40)": (age >= 25) & (age < 40), "[40, 60)": (age >= 40) & (age < 60)}),
    ):
        for group, mask in groups.items():
            labels = {"slice": slice_name, "group": group, "model_version": stack.version}
            got = metric_value(metrics, "plumbline_live_slice_positive_rate", **labels)
            assert got == pytest.approx(pred[mask].mean(), abs=1e-12), labels
            assert metric_value(metrics, "plumbline_live_slice_rows", **labels) == mask.sum()
            if (mask & (y == 1)).any():
                tpr = pred[mask & (y == 1)].mean()
                assert metric_value(metrics, "plumbline_live_slice_tpr", **labels) == (
                    pytest.approx(tpr, abs=1e-12)
                )
            if (mask & (y == 0)).any():
                fpr = pred[mask & (y == 0)].mean()
                assert metric_value(metrics, "plumbline_live_slice_fpr", **labels) == (
                    pytest.approx(fpr, abs=1e-12)
                )
            checked += 1
    assert checked >= 4
    assert {s["slice"] for s in status["slices"]} == {"marital", "age_band"}


def test_the_running_monitor_checks_roles_and_records_refusals(stack: Stack) -> None:
    """The real monitor process: no credential gives 401, a viewer's token 403 (recorded as
    refused in the project's audit trail), the operator's token gets through."""
    import requests

    from plumbline.governance.identity import Users
    from plumbline.governance.trail import AuditTrail
    from plumbline.monitoring.settings import load_params

    project = stack.project
    trail = AuditTrail.for_project(load_params(project.params).audit, project.root)
    _, viewer = Users(trail.engine).add("vic", "viewer")
    url = stack.monitor.url
    missing = requests.post(url + "/retrain", timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="plumbline"'
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    assert (
        requests.post(url + "/feedback", json=[], headers=as_viewer, timeout=10).status_code == 403
    )
    assert requests.get(url + "/audit/verify", headers=as_viewer, timeout=10).json()["ok"]
    (refusal,) = [r for r in trail.records(actions=["refused"]) if r.actor == "vic"]
    assert refusal.subject == {"route": "/feedback", "method": "POST"}
    assert refusal.evidence["needs"] == "operator"
    assert requests.get(url + "/approvals", headers=as_viewer, timeout=10).json()["pending"] == []
