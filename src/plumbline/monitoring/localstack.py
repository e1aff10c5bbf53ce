"""Configurations for running Prometheus and Alertmanager next to a local server and monitor.

The files in ``monitoring/`` name docker compose hosts (``api:8000``, ``monitor:8001``,
``alertmanager:9093``). These functions write copies for processes on other hosts and ports
(the integration tests and ``make demo`` (:mod:`plumbline.monitoring.demo`) use loopback
ports), optionally with
every rule's pending time (``for``) and Alertmanager's grouping waits shortened so that a
demonstration does not take an hour. Everything else (jobs, expressions, routes, receivers)
is the repository's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from plumbline.core import yamlfile
from plumbline.core.paths import project_root


def _source(source: Path | None) -> Path:
    return source if source is not None else project_root() / "monitoring"


def rules(directory: Path, pending: str | None = None, source: Path | None = None) -> Path:
    """A copy of rules/plumbline.rules.yml; every ``for`` set to ``pending`` if given."""
    spec = yamlfile.safe_load((_source(source) / "rules/plumbline.rules.yml").read_text())
    if pending is not None:
        for group in spec["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = pending
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plumbline.rules.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def prometheus(
    directory: Path,
    targets: dict[str, str],
    alertmanager: str | None = None,
    interval: str | None = None,
    pending: str | None = None,
    source: Path | None = None,
) -> Path:
    """prometheus.yml with each job's target replaced (``targets``: job name -> host:port)."""
    config: dict[str, Any] = yamlfile.safe_load((_source(source) / "prometheus.yml").read_text())
    if interval is not None:
        config["global"].update(
            scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
        )
    config["rule_files"] = [str(rules(directory / "rules", pending, source))]
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name not in targets:
            raise KeyError(f"no target given for job {name!r}")
        job["static_configs"] = [{"targets": [targets[name]]}]
    if alertmanager:
        config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    else:
        config.pop("alerting", None)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def alertmanager(
    directory: Path,
    monitor_url: str,
    timings: dict[str, str] | None = None,
    source: Path | None = None,
) -> Path:
    """alertmanager.yml with the retrain webhook pointed at ``monitor_url``; ``timings``
    (group_wait, group_interval, repeat_interval) replace those of every route that sets them."""
    config: dict[str, Any] = yamlfile.safe_load((_source(source) / "alertmanager.yml").read_text())
    route = config["route"]
    for node in [route, *route.get("routes", [])]:
        for key, value in (timings or {}).items():
            if key in node:
                node[key] = value
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = monitor_url.rstrip("/") + "/alerts"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
