"""`make demo` may shorten timings and move ports and paths, never change a decision."""

from __future__ import annotations

import pytest
from support.paths import REPO

from plumbline.monitoring.demo import (
    DEFAULTS,
    STACK_SETTINGS,
    TIMING_PARAMS,
    DemoError,
    check_overrides,
    overrides_record,
    parse_settings,
)


@pytest.mark.parametrize(
    "key",
    [
        "gate.min_roc_auc",
        "gate.max_regression",
        "retrain.gate.min_roc_auc",
        "retrain.comparison.min_improvement",
        "retrain.comparison.confidence",
        "retrain.min_new_labels",
        "retrain.window.min_live_rows",
        "retrain.trigger_alerts",
        "monitor.drift.psi",
        "monitor.estimate.max_ece",
        "serve.threshold",
    ],
)
def test_the_guard_refuses_any_gate_or_retrain_decision_threshold(key: str) -> None:
    with pytest.raises(DemoError, match="may not override gate or retrain decision thresholds"):
        check_overrides({key: 0.5})
    with pytest.raises(DemoError, match=key.replace(".", r"\.")):
        parse_settings([f"{key}=0.5"])


def test_the_guard_refuses_settings_that_are_not_timings_ports_or_paths() -> None:
    with pytest.raises(DemoError, match="not a timing setting, port or path"):
        check_overrides({"serve.api_servers": 4})
    with pytest.raises(DemoError, match="expected key=value"):
        parse_settings(["replay.rate"])


def test_the_demo_defaults_pass_and_every_change_is_recorded_with_the_shipped_value() -> None:
    check_overrides(DEFAULTS)
    settings = parse_settings(["replay.rate=40"])
    assert settings["replay.rate"] == 40
    record = overrides_record(REPO, settings)
    assert set(record) <= TIMING_PARAMS | STACK_SETTINGS
    assert record["serve.poll_interval_s"] == {"shipped": 10.0, "demo": 2.0}
    assert record["monitor.interval_s"] == {"shipped": 15.0, "demo": 5.0}
    assert record["replay.rate"] == {"shipped": None, "demo": 40}
    assert record["prometheus.rules.for"]["demo"] == "30s"
    assert "15m" in record["prometheus.rules.for"]["shipped"]
    assert not any(k.startswith(("gate", "retrain.gate", "retrain.comparison")) for k in record)
    # A setting equal to the shipped one is no override.
    assert "monitor.port" not in overrides_record(REPO, {**settings, "monitor.port": 8001})
