"""A real Prometheus (Debian's) scrapes the real server and the monitor on loopback: the series
exist, every query of the Grafana dashboard returns data, and the alert rules evaluate (the
drift of late traffic against an early model fires PlumblineDataDrift)."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from support.monitoring import (
    PROMETHEUS,
    MonitorProcess,
    Project,
    PrometheusProcess,
    live_records,
    panel_queries,
    wait_for,
)
from support.serve import Server

from plumbline.monitoring.monitor import METRICS

# In CI a missing Prometheus is a broken install step, never a reason to skip.
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None and not os.environ.get("CI"),
    reason="prometheus not installed (Debian package 'prometheus'; .ci/run installs it)",
)

# Series that must exist once traffic and labels flowed (the server's: serving/metrics.py).
SERVER_SERIES = {
    "plumbline_http_requests_total",
    "plumbline_http_request_duration_seconds_bucket",
    "plumbline_validation_failures_total",
    "plumbline_batch_size_bucket",
    "plumbline_batch_rows_bucket",
    "plumbline_prediction_score_bucket",
    "plumbline_predictions_total",
    "plumbline_predicted_positive_ratio",
    "plumbline_model_info",
    "plumbline_model_ready",
    "plumbline_model_reloads_total",
    "plumbline_prediction_log_rows_total",
}


@dataclass
class Stack:
    server: Server
    monitor: MonitorProcess
    prometheus: PrometheusProcess
    errors: list[str]


class Traffic:
    """Single late-period records at about 20 per second until stopped; their outcomes are
    posted right away."""

    def __init__(self, server: Server, monitor: MonitorProcess) -> None:
        self.server, self.monitor = server, monitor
        self.records, self.outcomes = live_records(400, 2000)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        i = 0
        while not self._stop.wait(0.05):
            record, outcome = self.records[i % 2000], self.outcomes[i % 2000]
            i += 1
            r = session.post(self.server.url + "/predict", json=record, timeout=30)
            if r.status_code != 200:
                self.errors.append(f"{r.status_code} {r.text}")
                continue
            self.monitor.feedback({"request_id": r.json()["request_id"], "outcome": outcome})

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("prometheus")
    # The small test model is not calibrated on its test split; allow its CBPE estimate anyway
    # so that the estimate's series and panels are checked too.
    project = Project(root / "project", {"monitor": {"estimate": {"max_ece": 1.0}}})
    with project.server() as server:
        server.wait("/ready")
        with MonitorProcess(project) as monitor:
            # A first load: singles, two lists of records, one invalid request (422).
            records, outcomes = live_records(0, 300)
            ids = [server.post(r).json()["request_id"] for r in records[:260]]
            for chunk in (records[260:280], records[280:300]):
                answer = server.post(chunk).json()
                ids += [a["request_id"] for a in answer]
            feedback = [
                {"request_id": rid, "row": 0, "outcome": y}
                for rid, y in zip(ids[:260], outcomes[:260], strict=True)
            ]
            feedback += [
                {"request_id": rid, "row": i % 20, "outcome": y}
                for i, (rid, y) in enumerate(zip(ids[260:], outcomes[260:], strict=True))
            ]
            assert server.post({**records[0], "age": "old"}).status_code == 422
            wait_for(lambda: monitor.refresh()["stored_rows"] >= 300, 30, "the log")
            assert monitor.feedback(feedback).json()["matched"] == 300
            with (
                PrometheusProcess(
                    root / "prometheus",
                    api=f"127.0.0.1:{server.port}",
                    monitor=f"127.0.0.1:{monitor.port}",
                ) as prometheus,
                Traffic(server, monitor) as traffic,
            ):
                yield Stack(server, monitor, prometheus, traffic.errors)


def test_prometheus_scrapes_the_server_and_the_monitor(stack: Stack) -> None:
    def both_up() -> bool:
        up = stack.prometheus.query('up{job=~"plumbline-api|plumbline-monitor"}')
        return len(up) == 2 and all(r["value"][1] == "1" for r in up)

    wait_for(both_up, 60, "both targets up", details=lambda: str(stack.prometheus.api("targets")))
    # Every monitor series but those that need a retrain or an alert first.
    later = {
        "plumbline_monitor_alerts_received_total",
        "plumbline_retrain_last_end_timestamp_seconds",
        "plumbline_retrain_last_duration_seconds",
    }
    expected = SERVER_SERIES | (set(METRICS) - later)

    def missing() -> set[str]:
        names = set(stack.prometheus.api("label/__name__/values"))
        return expected - names

    wait_for(
        lambda: not missing(), 60, "every series", details=lambda: f"missing: {sorted(missing())}"
    )
    # Values that follow from the traffic.
    [ready] = stack.prometheus.query('plumbline_model_ready{job="plumbline-api"}')
    assert ready["value"][1] == "1"
    rejected = stack.prometheus.query('plumbline_validation_failures_total{field="age"}')
    assert float(rejected[0]["value"][1]) >= 1
    matched = stack.prometheus.query('plumbline_feedback_outcomes_total{result="matched"}')
    assert float(matched[0]["value"][1]) >= 300
    assert stack.errors == []


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = panel_queries("30s")
    assert len(queries) >= 20

    def empty() -> list[str]:
        out = []
        for title, expr in queries:
            result = stack.prometheus.query(expr)
            values = [float(r["value"][1]) for r in result]
            if not any(math.isfinite(v) for v in values):
                out.append(f"{title}: {expr}")
        return out

    wait_for(
        lambda: not empty(),
        90,
        "data for every panel query",
        every=2,
        details=lambda: "\n".join(empty()),
    )
    assert stack.errors == []


def test_alert_rules_evaluate_and_drift_fires(stack: Stack) -> None:
    def drift_firing() -> list[dict[str, Any]]:
        alerts = stack.prometheus.api("alerts")["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "PlumblineDataDrift" and a["state"] == "firing"
        ]

    firing = wait_for(drift_firing, 60, "PlumblineDataDrift to fire")
    features = {a["labels"]["feature"] for a in firing}
    assert {"euribor3m", "cons.price.idx"} <= features
    alert = next(a for a in firing if a["labels"]["feature"] == "euribor3m")
    assert alert["labels"]["action"] == "retrain"
    assert alert["annotations"]["summary"].startswith("Input drift on euribor3m (PSI ")
    groups = stack.prometheus.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 12
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert unhealthy == []
