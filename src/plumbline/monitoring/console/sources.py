"""What the console reads from other processes: series from Prometheus, firing alerts from
Alertmanager, the rollout from the server. Each read is short and never raises: a process that
is down or slow becomes a message on the page, not a broken page."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plumbline.monitoring.console.charts import Series
from plumbline.monitoring.settings import ConsoleConfig

PROMETHEUS_URL_ENV = "PLUMBLINE_PROMETHEUS_URL"
ALERTMANAGER_URL_ENV = "PLUMBLINE_ALERTMANAGER_URL"
TIMEOUT_S = 3.0
MAX_POINTS = 240  # per series: enough for a chart a laptop screen wide

# The charts: (title, PromQL, the label that names a series, unit, y range).
CHARTS: tuple[tuple[str, str, str, str, tuple[float | None, float | None]], ...] = (
    (
        "Live ROC AUC per version (labelled rows)",
        'plumbline_live_roc_auc{job="plumbline-monitor"}',
        "model_version",
        "",
        (0.5, 1.0),
    ),
    (
        "Estimated ROC AUC (CBPE, before labels arrive)",
        'plumbline_live_estimated_roc_auc{job="plumbline-monitor"}',
        "model_version",
        "",
        (0.5, 1.0),
    ),
    (
        "Requests per second",
        'sum by (route) (rate(plumbline_http_requests_total{route="/predict"}[5m]))',
        "route",
        "req/s",
        (0.0, None),
    ),
    (
        "Drift: PSI per feature (the 8 highest)",
        'plumbline_drift_psi{job="plumbline-monitor"}',
        "feature",
        "",
        (0.0, None),
    ),
)


@dataclass
class Fetched:
    """A read's result, or why there is none."""

    value: Any = None
    error: str | None = None


@dataclass
class Charts:
    series: dict[str, list[Series]] = field(default_factory=dict)
    error: str | None = None


def _url(configured: str | None, env: str) -> str | None:
    value = os.environ.get(env) or configured
    return value.rstrip("/") if value else None


def prometheus_url(config: ConsoleConfig) -> str | None:
    return _url(config.prometheus_url, PROMETHEUS_URL_ENV)


def alertmanager_url(config: ConsoleConfig) -> str | None:
    return _url(config.alertmanager_url, ALERTMANAGER_URL_ENV)


def _get(url: str, params: dict[str, str] | None = None) -> Fetched:
    import requests

    try:
        response = requests.get(url, params=params, timeout=TIMEOUT_S)
    except requests.RequestException as err:
        return Fetched(error=f"{url} unreachable ({type(err).__name__})")
    if response.status_code != 200:
        return Fetched(error=f"{url}: HTTP {response.status_code}")
    try:
        return Fetched(response.json())
    except ValueError:
        return Fetched(error=f"{url}: not JSON")


def query_range(base: str, query: str, label: str, start: float, end: float) -> Fetched:
    """One PromQL query over [start, end]: a list of :class:`Series` named by ``label``."""
    step = max(15.0, (end - start) / MAX_POINTS)
    got = _get(
        f"{base}/api/v1/query_range",
        {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.0f}s"},
    )
    if got.error:
        return got
    data = got.value.get("data", {}) if isinstance(got.value, dict) else {}
    out = []
    for result in data.get("result", []):
        name = str(result.get("metric", {}).get(label, "")) or "all"
        points = []
        for t, v in result.get("values", []):
            value = float(v)
            points.append((float(t), value if math.isfinite(value) else math.nan))
        out.append(Series(f"version {name}" if label == "model_version" else name, points))
    out.sort(key=lambda s: s.label)
    return Fetched(out)


def charts(config: ConsoleConfig, now: float) -> Charts:
    base = prometheus_url(config)
    if base is None:
        return Charts(error="no Prometheus configured (monitor.console.prometheus_url)")
    from concurrent.futures import ThreadPoolExecutor

    start = now - config.window_h * 3600
    with ThreadPoolExecutor(max_workers=len(CHARTS), thread_name_prefix="prometheus") as pool:
        answers = list(
            pool.map(lambda chart: query_range(base, chart[1], chart[2], start, now), CHARTS)
        )
    result = Charts()
    for (title, *_), got in zip(CHARTS, answers, strict=True):
        if got.error:
            return Charts(error=got.error)
        result.series[title] = got.value
    return result


def firing_alerts(config: ConsoleConfig) -> Fetched:
    """Alertmanager's active, unsilenced, uninhibited alerts: name, severity, summary, since."""
    base = alertmanager_url(config)
    if base is None:
        return Fetched([], error="no Alertmanager configured (monitor.console.alertmanager_url)")
    got = _get(
        f"{base}/api/v2/alerts",
        {"active": "true", "silenced": "false", "inhibited": "false"},
    )
    if got.error or not isinstance(got.value, list):
        return Fetched([], error=got.error or "unexpected answer from Alertmanager")
    alerts = [
        {
            "name": a.get("labels", {}).get("alertname", "?"),
            "severity": a.get("labels", {}).get("severity", ""),
            "summary": a.get("annotations", {}).get("summary")
            or a.get("annotations", {}).get("description", ""),
            "since": str(a.get("startsAt", ""))[:19].replace("T", " "),
        }
        for a in got.value
        if a.get("status", {}).get("state", "active") == "active"
    ]
    alerts.sort(key=lambda a: (a["severity"] != "critical", a["since"]))
    return Fetched(alerts)


def rollout_status(status: Callable[[], dict[str, Any]]) -> Fetched:
    """The server's ``GET /admin/rollout`` (through the monitor's control of the server)."""
    try:
        return Fetched(status())
    except Exception as err:  # the server down, a refused token: said on the page
        return Fetched(error=f"{type(err).__name__}: {str(err)[:200]}")
