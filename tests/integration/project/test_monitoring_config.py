"""The monitoring configuration in monitoring/: checked by Prometheus's and Alertmanager's own
tools, every alert rule unit-tested, and the files consistent with each other and the code."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from support.monitoring import AMTOOL, PROMTOOL, RULE_FILES, RULE_TEST_FILES, alert_rules
from support.paths import MONITORING, REPO

from plumbline.core import yamlfile
from plumbline.monitoring.settings import load_params

# In CI a missing tool is a broken install step, never a reason to skip.
IN_CI = bool(os.environ.get("CI"))
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not IN_CI,
    reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it)",
)
needs_amtool = pytest.mark.skipif(
    AMTOOL is None and not IN_CI,
    reason="amtool not installed (Debian package 'prometheus-alertmanager'; .ci/run installs it)",
)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_check_config() -> None:
    done = run(str(PROMTOOL), "check", "config", str(MONITORING / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", done.stdout))
    assert found == len(alert_rules())


@needs_promtool
def test_promtool_check_rules() -> None:
    done = run(str(PROMTOOL), "check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    done = run(str(PROMTOOL), "test", "rules", *map(str, RULE_TEST_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


@needs_amtool
def test_alertmanager_config_and_routing() -> None:
    config = MONITORING / "alertmanager.yml"
    done = run(str(AMTOOL), "check-config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    for rule in alert_rules():
        labels = [f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items())]
        done = run(str(AMTOOL), "config", "routes", "test", f"--config.file={config}", *labels)
        receivers = done.stdout.strip().split(",")
        expected = (
            ["retrain", "oncall"] if rule["labels"].get("action") == "retrain" else ["oncall"]
        )
        assert receivers == expected, (rule["alert"], done.stdout, done.stderr)
    hooks = [
        h["url"]
        for r in yamlfile.safe_load(config.read_text())["receivers"]
        for h in r.get("webhook_configs", [])
    ]
    port = load_params(REPO / "params.yaml").monitor.port
    assert hooks == [f"http://monitor:{port}/alerts"]
