"""The console's data: everything one page shows, gathered from the registry, the audit trail,
the monitor, the server, Prometheus and Alertmanager.

The slow or remote reads run in parallel and never fail the page: each part that cannot be
read says why. A registered version's details (metrics, model card, lineage) change rarely and
are cached briefly; verifying the whole audit chain is a background job whose latest result is
shown with its time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plumbline.governance.trail import ACTIONS, AuditTrail, Verification
from plumbline.monitoring.console import sources
from plumbline.monitoring.console.charts import Series, bar_chart, line_chart
from plumbline.monitoring.settings import ConsoleConfig, Params

log = logging.getLogger("plumbline.console")

VERSION_TTL_S = 30.0
# What the timeline shows: every change of the model's state and every refusal, not the
# registrations and user management (`plumbline audit show` has everything).
TIMELINE_ACTIONS = tuple(
    a
    for a in ACTIONS
    if a not in ("register", "user_add", "token_add", "token_revoke", "role_change")
)
# What the timeline says of a record's subject (the rest is in `plumbline audit show`).
SUBJECT_SHOWN = ("version", "alias", "from", "to", "user", "route", "command")
METRICS_SHOWN = ("roc_auc", "pr_auc", "brier", "ece", "log_loss", "accuracy", "f1")


@dataclass
class Sources:
    """Where the console reads from; each a callable so that tests and the monitor can give
    their own."""

    params: Params
    trail: AuditTrail
    registry: Callable[[], Any] | None  # the MLflow registry (promotion.registry.Registry)
    snapshot: Callable[[], Any]  # the monitor's newest Snapshot
    rollout_report: Callable[[], dict[str, Any]]  # the decider's verdict and last decision
    server_rollout: Callable[[], dict[str, Any]]  # the server's GET /admin/rollout
    repos: list[Path] = field(default_factory=list)


class Verifier:
    """The newest full verification of the audit chain, redone in the background every
    ``interval_s`` (a page never waits for it)."""

    def __init__(self, trail: AuditTrail, interval_s: float) -> None:
        self.trail = trail
        self.interval_s = interval_s
        self.result: Verification | None = None
        self.error: str | None = None
        self.at: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def latest(self) -> tuple[Verification | None, float | None, str | None]:
        self.start()
        with self._lock:
            return self.result, self.at, self.error

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="console-verify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_now(self) -> Verification | None:
        try:
            result = self.trail.verify()
        except Exception as err:
            log.exception("could not verify the audit trail")
            with self._lock:
                self.error, self.at = f"{type(err).__name__}: {str(err)[:200]}", time.time()
            return None
        with self._lock:
            self.result, self.error, self.at = result, None, time.time()
        return result

    def _loop(self) -> None:
        while True:
            self.run_now()
            if self._stop.wait(self.interval_s):
                return


class VersionCache:
    """Details of registered versions, kept for a short while."""

    def __init__(self, ttl_s: float = VERSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # a clear() during a make() must win over its older result

    def get(self, version: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(version)
            generation = self._generation
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = make()
        with self._lock:
            if generation == self._generation:
                self._items[version] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._generation += 1


def version_details(registry: Any, version: str, repos: list[Path]) -> dict[str, Any]:
    """One version: its test metrics, gate verdict, model card (markdown) and lineage chain."""
    from plumbline.promotion.lineage import trace_version

    found = registry.client.get_model_version(registry.name, version)
    tags = dict(found.tags)
    metrics: dict[str, float] = {}
    if found.run_id:
        try:
            run = registry.client.get_run(found.run_id)
            metrics = {k: v for k, v in run.data.metrics.items() if k in METRICS_SHOWN}
        except Exception as err:  # a run deleted from the store: said in the lineage
            log.info("version %s: no run metrics (%s)", version, err)
    chain = trace_version(registry, version, repos)
    return {
        "version": version,
        "metrics": dict(sorted(metrics.items())),
        "gate": tags.get("gate.verdict", "-"),
        "commit": tags.get("plumbline.git_commit", "unknown"),
        "card": found.description or "",
        "lineage": [
            {"name": link.name, "ok": link.ok, "value": link.value, "missing": link.missing}
            for link in chain.links
        ],
    }


def _models(sources_: Sources, cache: VersionCache) -> dict[str, Any]:
    from plumbline.promotion import approvals

    if sources_.registry is None:
        return {"error": "no model registry", "versions": [], "pending": []}
    registry = sources_.registry()
    aliases = registry.aliases()
    cfg = sources_.params.promotion.approvals
    pending = (
        [p.to_json() for p in approvals.pending(sources_.trail, registry, cfg)]
        if cfg.required
        else []
    )
    shown: dict[str, list[str]] = {}
    for alias in ("champion", "challenger"):
        if alias in aliases:
            shown.setdefault(aliases[alias], []).append(alias)
    for p in pending:
        shown.setdefault(str(p["version"]), []).append("pending approval")

    def details(version: str) -> dict[str, Any]:
        # One unreadable version (deleted from MLflow) must not hide the others, nor the
        # approval request an approver may want to reject.
        try:
            return cache.get(version, lambda: version_details(registry, version, sources_.repos))
        except Exception as err:
            log.exception("console: version %s", version)
            return {
                "version": version,
                "error": f"{type(err).__name__}: {str(err)[:200]}",
                "metrics": {},
                "gate": "-",
                "commit": "unknown",
                "card": "",
                "lineage": [],
            }

    versions = [
        {**details(v), "roles": roles}
        for v, roles in sorted(shown.items(), key=lambda kv: -int(kv[0]))
    ]
    history = registry.history()
    previous = None
    champion = aliases.get("champion")
    if champion is not None:
        from plumbline.promotion.registry import champion_lineage

        lineage = champion_lineage(history)
        if lineage and lineage[-1] != champion:
            lineage.append(champion)
        previous = lineage[-2] if len(lineage) >= 2 else None
    return {
        "model": registry.name,
        "champion": champion,
        "rollback_to": previous,
        "versions": versions,
        "pending": pending,
        "required": cfg.required,
        "error": None,
    }


def _timeline(trail: AuditTrail, n: int) -> list[dict[str, Any]]:
    shown = trail.last(n, actions=TIMELINE_ACTIONS)
    return [
        {
            "seq": r.seq,
            "at": r.at[:19].replace("T", " "),
            "actor": r.actor,
            "via": r.via,
            "action": r.action,
            "subject": " ".join(
                f"{k}={r.subject[k]}" for k in SUBJECT_SHOWN if r.subject.get(k) is not None
            ),
            "comment": r.comment,
        }
        for r in reversed(shown)
    ]


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _live(snapshot: Any) -> dict[str, Any]:
    live = snapshot.live
    estimate = snapshot.estimate
    drift = snapshot.drift
    return {
        "serving_version": snapshot.serving_version,
        "updated_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(snapshot.updated_at))
        if snapshot.updated_at
        else None,
        "error": snapshot.error,
        "live": None
        if live is None
        else {
            "version": live.model_version,
            "rows": live.rows,
            "roc_auc": _finite(live.roc_auc),
            "pr_auc": _finite(live.pr_auc),
            "positive_rate": _finite(live.positive_rate),
        },
        "estimate": None
        if estimate is None
        else {
            "version": estimate.model_version,
            "available": estimate.available,
            "reason": estimate.reason,
            "roc_auc": _finite(estimate.roc_auc),
        },
        "drift": None
        if drift is None
        else {
            "rows": drift.rows,
            "enough_rows": drift.enough_rows,
            "drifted": drift.drifted_features,
            "psi": [
                (f.feature, float(f.psi)) for f in drift.features if _finite(f.psi) is not None
            ],
            "threshold": drift.thresholds.get("psi"),
        },
    }


def _charts(config: ConsoleConfig, live: dict[str, Any], now: float) -> dict[str, Any]:
    fetched = sources.charts(config, now)
    rendered = []
    for title, _query, _label, unit, (y_min, y_max) in sources.CHARTS:
        series: list[Series] = fetched.series.get(title, [])
        threshold = None
        if "PSI" in title:
            series = sorted(
                series,
                key=lambda s: -max((v for _, v in s.points if math.isfinite(v)), default=0.0),
            )[:8]
            threshold = (live.get("drift") or {}).get("threshold")
        rendered.append(
            line_chart(title, series, unit=unit, y_min=y_min, y_max=y_max, threshold=threshold)
        )
    drift = live.get("drift") or {}
    bars = bar_chart(
        "PSI per feature now (newest window)",
        list(drift.get("psi") or []),
        threshold=drift.get("threshold"),
    )
    return {"charts": rendered, "psi_now": bars, "error": fetched.error}


def gather(sources_: Sources, cache: VersionCache, verifier: Verifier) -> dict[str, Any]:
    """Everything the page shows; a part that cannot be read carries an ``error``."""
    config = sources_.params.monitor.console
    now = time.time()

    def guarded(name: str, make: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return make()
            except Exception as err:
                log.exception("console: %s", name)
                return {"error": f"{type(err).__name__}: {str(err)[:300]}"}

        return run

    live = guarded("live", lambda: _live(sources_.snapshot()))()
    jobs = {
        "models": guarded("models", lambda: _models(sources_, cache)),
        "timeline": guarded("timeline", lambda: _timeline(sources_.trail, config.timeline)),
        "server_rollout": guarded(
            "rollout", lambda: sources.rollout_status(sources_.server_rollout)
        ),
        "alerts": guarded("alerts", lambda: sources.firing_alerts(config)),
        "charts": guarded("charts", lambda: _charts(config, live, now)),
    }
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="console") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        out: dict[str, Any] = {name: f.result() for name, f in futures.items()}
    verification, verified_at, verify_error = verifier.latest()
    out["live"] = live
    out["rollout"] = guarded("decider", sources_.rollout_report)()
    out["verify"] = {
        "ok": False if verify_error else (None if verification is None else verification.ok),
        "text": f"could not be verified: {verify_error}"
        if verify_error
        else ("being verified" if verification is None else str(verification)),
        "at": None
        if verified_at is None
        else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(verified_at)),
    }
    out["links"] = config.links
    out["refresh_s"] = config.refresh_s
    return out
