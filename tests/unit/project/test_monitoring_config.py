"""The monitoring configuration in monitoring/: checked by Prometheus's and Alertmanager's own
tools, every alert rule unit-tested, and the files consistent with each other and the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from support.monitoring import DASHBOARD, RULE_FILES, RULE_TEST_FILES, RULES, alert_rules
from support.paths import MONITORING, REPO

from plumbline.core import yamlfile
from plumbline.monitoring.monitor import METRICS
from plumbline.monitoring.rollout.arms import ROLLOUT_METRICS
from plumbline.monitoring.settings import RetrainConfig, load_params


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def test_every_alert_is_documented_and_unit_tested() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    required = {
        "PlumblineLatencySLO",
        "PlumblineHighErrorRate",
        "PlumblineNoTraffic",
        "PlumblineReadinessFlapping",
        "PlumblineModelReloadFailed",
        "PlumblineDataDrift",
        "PlumblinePredictionDrift",
        "PlumblineLivePerformanceDrop",
        "PlumblineRetrainFailed",
    }
    assert required <= set(names)
    for rule in rules:
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), rule["alert"]
        assert len(annotations.get("description", "")) > 120, (
            f"{rule['alert']}: the description must tell the person on call what to do"
        )
        assert rule["labels"]["severity"] in ("page", "warning")
    fired: set[str] = set()
    quiet: set[str] = set()
    cases = [c for path in RULE_TEST_FILES for c in yamlfile.safe_load(path.read_text())["tests"]]
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(names) <= fired, f"alerts without a firing unit test: {set(names) - fired}"
    assert set(names) <= quiet, f"alerts without a not-firing unit test: {set(names) - quiet}"


def test_retrain_alerts_are_the_ones_the_monitor_acts_on() -> None:
    retrain = {r["alert"] for r in alert_rules() if r["labels"].get("action") == "retrain"}
    assert retrain == {
        "PlumblineDataDrift",
        "PlumblinePredictionDrift",
        "PlumblineLivePerformanceDrop",
        "PlumblineEstimatedPerformanceDrop",
    }
    assert set(RetrainConfig().trigger_alerts) == retrain
    assert set(load_params(REPO / "params.yaml").retrain.trigger_alerts) == retrain


def test_prometheus_scrapes_the_api_and_the_monitor() -> None:
    config = yamlfile.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    port = load_params(REPO / "params.yaml").monitor.port
    assert jobs["plumbline-api"] == ["api:8000"]
    assert jobs["plumbline-monitor"] == [f"monitor:{port}"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    assert (MONITORING / config["rule_files"][0]).parent == RULES.parent
    assert set(RULES.parent.glob("*.yml")) == set(RULE_FILES)  # each one is tested


def known_metrics() -> set[str]:
    """Series names the server and the monitor export (with the histogram/counter suffixes)."""
    server: set[str] = set()
    for module in ("metrics.py",):
        source = (REPO / "src/plumbline/serving" / module).read_text()
        server |= set(re.findall(r'\(\s*"(plumbline_[a-z_]+)"', source))
    names = set()
    for name in server | set(METRICS) | set(ROLLOUT_METRICS):
        names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_rules_and_dashboard_only_use_exported_series() -> None:
    known = known_metrics()
    assert "plumbline_http_request_duration_seconds_bucket" in known
    exprs = [r["expr"] for r in alert_rules()]
    exprs += [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for expr in exprs:
        for name in re.findall(r"\bplumbline_[a-z_]+", expr):
            assert name in known, f"{name} (in {expr!r}) is not exported"


def test_grafana_provisioning_and_dashboard() -> None:
    sources = yamlfile.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yamlfile.safe_load(
        (MONITORING / "grafana/provisioning/dashboards/plumbline.yml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"

    board = dashboard()
    assert DASHBOARD.read_text() == json.dumps(board, indent=2) + "\n", "keep the JSON readable"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"]
        assert panel["description"] and panel["targets"]
        assert all(t["expr"].strip() for t in panel["targets"])
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in (
        "requests per second",
        "latency",
        "errors",
        "batch sizes",
        "score distribution",
        "positive rate",
        "per-feature drift",
        "live roc auc",
        "model version",
        "reloads",
    ):
        assert topic in titles, f"no panel about {topic}"
    # Panels are laid out without overlapping.
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not (mine & cells), panel["title"]
        assert g["x"] + g["w"] <= 24
        cells |= mine


def test_monitoring_files_are_valid_yaml() -> None:
    for path in Path(MONITORING).rglob("*.yml"):
        assert yamlfile.safe_load(path.read_text()) is not None, path


def test_rollout_dashboard_shows_each_arm_and_uses_exported_series() -> None:
    path = MONITORING / "grafana/dashboards/rollout.json"
    board = json.loads(path.read_text())
    assert path.read_text() == json.dumps(board, indent=2) + "\n", "keep the JSON readable"
    assert board["uid"] != dashboard()["uid"]
    known = known_metrics()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not (mine & cells) and g["x"] + g["w"] <= 24, panel["title"]
        cells |= mine
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus" and panel["description"]
        for target in panel["targets"]:
            for name in re.findall(r"\bplumbline_[a-z_]+", target["expr"]):
                assert name in known, f"{name} ({panel['title']}) is not exported"
    per_arm = [p["title"] for p in panels if all("arm" in t["legendFormat"] for t in p["targets"])]
    for topic in ("requests", "errors", "latency", "positive rate", "roc auc", "log loss"):
        assert any(topic in t.lower() for t in per_arm), f"no per-arm panel about {topic}"
    titles = " | ".join(p["title"].lower() for p in panels)
    assert "shadow divergence" in titles and "verdict" in titles
