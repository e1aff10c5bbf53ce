"""The monitor's state: drift of the newest logged rows, live performance from delayed labels.

:meth:`Monitor.refresh` (every ``monitor.interval_s``, and on demand) copies new prediction-log
files into the store, compares the newest ``monitor.window_rows`` rows with the training
profile of the model version that is serving (:mod:`plumbline.monitoring.references`) using
:func:`plumbline.monitoring.drift.compare`, and computes ROC AUC, PR AUC, Brier score and the
observed positive rate over the newest ``monitor.label_window_rows`` labelled rows of that
version. The result is a :class:`Snapshot`; :class:`MonitorCollector` exports it to Prometheus
(names in :data:`METRICS`), ``GET /status`` returns it as JSON and ``plumbline drift-report``
renders it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plumbline.core.contract import Contract
from plumbline.core.paths import layout
from plumbline.monitoring import cbpe
from plumbline.monitoring.drift import DriftReport, DriftThresholds, compare
from plumbline.monitoring.references import ReferenceMissing, References
from plumbline.monitoring.settings import Params
from plumbline.monitoring.slices import METRICS as SLICE_METRICS
from plumbline.monitoring.slices import families as slice_families
from plumbline.monitoring.slices import live_slices
from plumbline.monitoring.store import FeedbackResult, MonitorStore, Outcome

log = logging.getLogger("plumbline.monitor")

# Every series the monitor exports, with its meaning (also the reference for alert rules and
# the Grafana dashboard; the tests check that both only use names from here or the server's).
METRICS: dict[str, str] = {
    "plumbline_drift_psi": "PSI of each feature, newest window vs the serving model's training "
    "profile",
    "plumbline_drift_p_value": "p-value of the two-sample KS (numeric) or chi-squared "
    "(categorical) test per feature",
    "plumbline_drift_statistic": "KS statistic or chi-squared statistic per feature",
    "plumbline_drift_js_distance": "Jensen-Shannon distance (base 2) per categorical feature",
    "plumbline_drift_detected": "1 when a feature drifted (PSI above and p-value below their "
    "thresholds)",
    "plumbline_drift_features_drifted": "How many features drifted",
    "plumbline_drift_window_rows": "Logged rows in the drift window",
    "plumbline_drift_evaluated": "1 when the window had enough rows for a verdict",
    "plumbline_drift_psi_threshold": "monitor.drift.psi",
    "plumbline_prediction_drift_psi": "PSI of the model's scores vs its training scores",
    "plumbline_prediction_drift_p_value": "KS p-value of the scores vs the training scores",
    "plumbline_prediction_drift_detected": "1 when the score distribution drifted",
    "plumbline_live_roc_auc": "ROC AUC over the newest labelled rows of the serving version",
    "plumbline_live_pr_auc": "PR AUC (average precision) over the same rows",
    "plumbline_live_brier": "Brier score over the same rows",
    "plumbline_live_positive_rate": "Share of positive true outcomes over the same rows",
    "plumbline_live_predicted_positive_rate": "Share of positive predicted labels over the "
    "same rows",
    "plumbline_live_labelled_rows": "Labelled rows the live metrics are computed on",
    "plumbline_model_test_roc_auc": "ROC AUC of the serving version on its test split",
    "plumbline_model_test_pr_auc": "PR AUC of the serving version on its test split",
    "plumbline_feedback_outcomes_total": "Posted outcomes by result: matched (prediction "
    "known), pending (kept, matched once the prediction's log file is read), duplicate",
    "plumbline_feedback_conflicts_total": "Duplicate outcomes that disagreed with the stored "
    "one (the first is kept)",
    "plumbline_feedback_invalid_requests_total": "POST /feedback bodies rejected with 422",
    "plumbline_feedback_pending": "Stored outcomes not matched to a logged prediction yet "
    "(kept until matched)",
    "plumbline_feedback_stored": "Stored outcomes",
    "plumbline_monitor_logged_rows": "Logged predictions in the monitor's store",
    "plumbline_monitor_log_rows_ingested_total": "Rows copied from prediction-log files",
    "plumbline_monitor_log_duplicate_rows_total": "Logged rows whose request id and row were "
    "already stored",
    "plumbline_monitor_log_file_errors_total": "Prediction-log files that could not be read",
    "plumbline_monitor_refresh_errors_total": "Refreshes that failed",
    "plumbline_monitor_last_refresh_timestamp_seconds": "When the last refresh finished",
    "plumbline_monitor_refresh_duration_seconds": "How long the last refresh took",
    "plumbline_monitor_alerts_received_total": "Firing alerts received on POST /alerts",
    "plumbline_retrain_runs_total": "Finished retrains by result: promoted, rejected (gate "
    "failed), failed (error)",
    "plumbline_retrain_running": "1 while a retrain runs (in any process)",
    "plumbline_retrain_last_failed": "1 when the last finished retrain failed",
    "plumbline_retrain_last_end_timestamp_seconds": "When the last retrain ended",
    "plumbline_retrain_last_duration_seconds": "How long the last retrain took",
    "plumbline_retrain_triggers_total": "Retrain requests by outcome: started, busy, cooldown, "
    "not_enough_labels, disabled",
    **cbpe.ESTIMATE_METRICS,
    **SLICE_METRICS,
}

RETRAIN_RESULTS = ("promoted", "rejected", "failed")
TRIGGER_OUTCOMES = ("started", "busy", "cooldown", "not_enough_labels", "disabled")
FEEDBACK_RESULTS = ("matched", "pending", "duplicate")


@dataclass
class LivePerformance:
    model_version: str
    rows: int
    positives: int
    roc_auc: float | None
    pr_auc: float | None
    brier: float | None
    positive_rate: float
    predicted_positive_rate: float
    mean_score: float
    first_at: float
    last_at: float


def live_performance(frame: pd.DataFrame, version: str) -> LivePerformance | None:
    """Metrics over labelled rows (columns ``outcome``, ``probability``, ``label``)."""
    if frame.empty:
        return None
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = frame["outcome"].to_numpy(dtype=np.int64)
    p = frame["probability"].to_numpy(dtype=float)
    both = 0 < y.sum() < len(y)
    return LivePerformance(
        model_version=version,
        rows=len(frame),
        positives=int(y.sum()),
        roc_auc=float(roc_auc_score(y, p)) if both else None,
        pr_auc=float(average_precision_score(y, p)) if both else None,
        brier=float(brier_score_loss(y, p, labels=[0, 1])),
        positive_rate=float(y.mean()),
        predicted_positive_rate=float(frame["label"].to_numpy(dtype=float).mean()),
        mean_score=float(p.mean()),
        first_at=float(frame["received_at"].min()),
        last_at=float(frame["received_at"].max()),
    )


@dataclass
class Snapshot:
    updated_at: float = 0.0
    refresh_seconds: float = 0.0
    error: str | None = None
    stored_rows: int = 0
    serving_version: str | None = None
    reference_source: str | None = None
    drift: DriftReport | None = None
    score_rows: int = 0
    live: LivePerformance | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)
    test_metrics: dict[str, float] | None = None
    feedback: dict[str, int] = field(default_factory=dict)
    estimate: cbpe.Estimate | None = None  # CBPE of the serving version, or why there is none
    slices: list[dict[str, Any]] = field(default_factory=list)  # live per-slice rates

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift"] = self.drift.to_dict() if self.drift is not None else None
        return out


class Monitor:
    def __init__(self, params: Params, contract: Contract, root: Path) -> None:
        self.params = params
        self.contract = contract
        self.root = root
        cfg = params.monitor
        self.cfg = cfg
        self.state_dir = self._resolve(cfg.state_dir)
        self.log_dir = self._resolve(cfg.prediction_log_dir or params.serve.prediction_log.dir)
        self.report_dir = self._resolve(cfg.report_dir)
        self.features = contract.feature_columns(params.featurize.exclude_columns)
        self.store = MonitorStore(self.state_dir / "monitor.sqlite", contract, self.features)
        self.references = References(self.state_dir, layout(root))
        self.thresholds = DriftThresholds(
            psi=cfg.drift.psi, p_value=cfg.drift.p_value, min_rows=cfg.drift.min_rows
        )
        self.counters: Counter[str] = Counter()
        self.snapshot = Snapshot()
        self._refresh_lock = threading.Lock()  # one ingest of the log files at a time
        # One refresh at a time, each publishing what it computed: an older refresh (the
        # background loop's) must never replace the snapshot of a newer one (POST /refresh
        # after a feedback post) with figures from before the post.
        self._snapshot_lock = threading.Lock()
        self._count_lock = threading.Lock()

    def count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counters[key] += n

    def counter_values(self) -> Counter[str]:
        with self._count_lock:
            return Counter(self.counters)

    def _resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.root / path

    # --- feedback ---------------------------------------------------------------------------

    def outcome_value(self, value: Any) -> int:
        """0/1, true/false, or the contract's target label ("yes"/"no") as 0 or 1."""
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int) and value in (0, 1):
            return value
        positive = self.contract.target.positive
        spec = self.contract.columns[self.contract.target.column]
        if isinstance(value, str) and spec.type == "category":
            if value == str(positive):
                return 1
            if value in (spec.categories or []):
                return 0
        raise ValueError(
            f"outcome {value!r} is not 0/1, true/false or a category of "
            f"{self.contract.target.column!r} ({spec.categories})"
        )

    def feedback(self, outcomes: Sequence[Outcome]) -> FeedbackResult:
        # Files finished since the last refresh count as known ids.
        self._ingest()
        result = self.store.add_feedback(outcomes)
        self.count("feedback.matched", result.matched)
        self.count("feedback.pending", result.pending)
        self.count("feedback.duplicate", result.duplicates)
        self.count("feedback.conflict", result.conflicts)
        if result.pending or result.duplicates:
            log.info(
                "feedback: %d outcomes, %d pending (prediction not logged yet), %d duplicates "
                "(%d conflicting)",
                result.received,
                result.pending,
                result.duplicates,
                result.conflicts,
            )
        return result

    # --- refresh ----------------------------------------------------------------------------

    def _ingest(self) -> None:
        with self._refresh_lock:
            done = self.store.ingest_log(self.log_dir, self.cfg.retention_rows)
        self.count("log.rows", done.rows)
        self.count("log.duplicates", done.duplicates)
        self.count("log.errors", len(done.errors))

    def refresh(self) -> Snapshot:
        with self._snapshot_lock:
            return self._refresh()

    def _refresh(self) -> Snapshot:
        started = time.perf_counter()
        try:
            self._ingest()
            snapshot = self._compute()
        except Exception as err:
            log.exception("monitor refresh failed")
            self.count("refresh.errors")
            snapshot = Snapshot(
                **{**self.snapshot.__dict__, "error": f"{type(err).__name__}: {err}"}
            )
        snapshot.updated_at = time.time()
        snapshot.refresh_seconds = time.perf_counter() - started
        self.snapshot = snapshot
        return snapshot

    def _compute(self) -> Snapshot:
        snap = Snapshot(
            stored_rows=self.store.prediction_rows(), feedback=self.store.feedback_counts()
        )
        window = self.store.window(self.cfg.window_rows)
        for entry in self.store.versions():
            labelled = self.store.labelled(self.cfg.label_window_rows, entry["model_version"])
            perf = live_performance(labelled, entry["model_version"])
            snap.versions.append({**entry, "live": asdict(perf) if perf else None})
        if window.empty:
            return snap
        version = str(window["model_version"].iloc[-1])
        snap.serving_version = version
        labelled = self.store.labelled(self.cfg.label_window_rows, version)
        if len(labelled) >= self.cfg.min_labelled_rows:
            snap.live = live_performance(labelled, version)
        snap.slices = live_slices(
            window[window["model_version"] == version],
            labelled if len(labelled) >= self.cfg.min_labelled_rows else None,
            self.contract,
        )
        try:
            reference = self.references.get(version)
        except ReferenceMissing as err:
            snap.error = str(err)
            return snap
        snap.reference_source = reference.source
        snap.test_metrics = reference.metrics
        own = window[window["model_version"] == version]
        scores = (
            own["probability"].to_numpy(dtype=float)
            if len(own) >= self.thresholds.min_rows
            else None
        )
        snap.score_rows = len(own)
        est = self.params.monitor.estimate
        if est.enabled:
            snap.estimate = cbpe.estimate(
                own["probability"].to_numpy(dtype=float),
                version,
                self.params.serve.threshold,
                (reference.metrics or {}).get("ece"),
                est.max_ece,
                est.min_rows,
            )
        snap.drift = compare(
            reference.profile,
            window[self.features],
            self.thresholds,
            reference.score_profile,
            scores,
        )
        return snap


# --- Prometheus ---------------------------------------------------------------------------


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class MonitorCollector:
    """Exports the current snapshot, the counters and the retrain state (read from the store,
    so runs of other processes count too)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.monitor
        snap = m.snapshot
        c = m.counter_values()

        def gauge(name: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, METRICS[name], labels=list(labels))

        def counter(name: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(
                name.removesuffix("_total"), METRICS[name], labels=list(labels)
            )

        # drift per feature
        psi = gauge("plumbline_drift_psi", ["feature", "kind"])
        p_value = gauge("plumbline_drift_p_value", ["feature", "test"])
        statistic = gauge("plumbline_drift_statistic", ["feature", "test"])
        js = gauge("plumbline_drift_js_distance", ["feature"])
        detected = gauge("plumbline_drift_detected", ["feature"])
        report = snap.drift
        if report is not None and report.enough_rows:
            for f in report.features:
                psi.add_metric([f.feature, f.kind], f.psi)
                p_value.add_metric([f.feature, f.test], f.p_value)
                statistic.add_metric([f.feature, f.test], f.statistic)
                detected.add_metric([f.feature], float(f.drifted))
                if f.js_distance is not None:
                    js.add_metric([f.feature], f.js_distance)
        yield from (psi, p_value, statistic, js, detected)
        drifted = gauge("plumbline_drift_features_drifted")
        rows = gauge("plumbline_drift_window_rows")
        evaluated = gauge("plumbline_drift_evaluated")
        rows.add_metric([], float(report.rows) if report else 0.0)
        evaluated.add_metric([], float(bool(report and report.enough_rows)))
        if report is not None and report.enough_rows:
            drifted.add_metric([], float(len(report.drifted_features)))
        threshold = gauge("plumbline_drift_psi_threshold")
        threshold.add_metric([], m.thresholds.psi)
        yield from (drifted, rows, evaluated, threshold)

        # prediction drift
        s_psi = gauge("plumbline_prediction_drift_psi", ["model_version"])
        s_p = gauge("plumbline_prediction_drift_p_value", ["model_version"])
        s_detected = gauge("plumbline_prediction_drift_detected", ["model_version"])
        if report is not None and report.score is not None and snap.serving_version:
            s_psi.add_metric([snap.serving_version], report.score.psi)
            s_p.add_metric([snap.serving_version], report.score.p_value)
            s_detected.add_metric([snap.serving_version], float(report.score.drifted))
        yield from (s_psi, s_p, s_detected)

        # live performance of the serving version
        live_values = {
            "plumbline_live_roc_auc": "roc_auc",
            "plumbline_live_pr_auc": "pr_auc",
            "plumbline_live_brier": "brier",
            "plumbline_live_positive_rate": "positive_rate",
            "plumbline_live_predicted_positive_rate": "predicted_positive_rate",
            "plumbline_live_labelled_rows": "rows",
        }
        for name, attr in live_values.items():
            family = gauge(name, ["model_version"])
            if snap.live is not None:
                value = getattr(snap.live, attr)
                if _finite(value):
                    family.add_metric([snap.live.model_version], float(value))
            yield family
        for name, key in (
            ("plumbline_model_test_roc_auc", "roc_auc"),
            ("plumbline_model_test_pr_auc", "pr_auc"),
        ):
            family = gauge(name, ["model_version"])
            value = (snap.test_metrics or {}).get(key)
            if snap.serving_version and _finite(value):
                family.add_metric([snap.serving_version], float(value or 0.0))
            yield family
        yield from cbpe.families(snap.estimate, gauge)

        yield from slice_families(snap.slices, snap.serving_version)

        # feedback
        outcomes = counter("plumbline_feedback_outcomes_total", ["result"])
        for result in FEEDBACK_RESULTS:
            outcomes.add_metric([result], float(c[f"feedback.{result}"]))
        conflicts = counter("plumbline_feedback_conflicts_total")
        conflicts.add_metric([], float(c["feedback.conflict"]))
        invalid = counter("plumbline_feedback_invalid_requests_total")
        invalid.add_metric([], float(c["feedback.invalid"]))
        pending = gauge("plumbline_feedback_pending")
        pending.add_metric([], float(snap.feedback.get("pending", 0)))
        stored = gauge("plumbline_feedback_stored")
        stored.add_metric([], float(snap.feedback.get("stored", 0)))
        yield from (outcomes, conflicts, invalid, pending, stored)

        # the monitor itself
        logged = gauge("plumbline_monitor_logged_rows")
        logged.add_metric([], float(snap.stored_rows))
        yield logged
        for name, key in (
            ("plumbline_monitor_log_rows_ingested_total", "log.rows"),
            ("plumbline_monitor_log_duplicate_rows_total", "log.duplicates"),
            ("plumbline_monitor_log_file_errors_total", "log.errors"),
            ("plumbline_monitor_refresh_errors_total", "refresh.errors"),
        ):
            total = counter(name)
            total.add_metric([], float(c[key]))
            yield total
        last = gauge("plumbline_monitor_last_refresh_timestamp_seconds")
        duration = gauge("plumbline_monitor_refresh_duration_seconds")
        if snap.updated_at:
            last.add_metric([], snap.updated_at)
            duration.add_metric([], snap.refresh_seconds)
        yield from (last, duration)
        alerts = counter("plumbline_monitor_alerts_received_total", ["alertname"])
        for key, value in sorted(c.items()):
            if key.startswith("alert."):
                alerts.add_metric([key.removeprefix("alert.")], float(value))
        yield alerts

        # retraining (from the store: survives restarts, sees other processes' runs)
        counts = m.store.retrain_counts()
        runs = counter("plumbline_retrain_runs_total", ["result"])
        for result in RETRAIN_RESULTS:
            runs.add_metric([result], float(counts.get(result, 0)))
        running = gauge("plumbline_retrain_running")
        running.add_metric([], float(counts.get("running", 0) > 0))
        finished = [r for r in m.store.retrains(limit=20) if r.status != "running"]
        last_failed = gauge("plumbline_retrain_last_failed")
        last_failed.add_metric([], float(bool(finished) and finished[0].status == "failed"))
        last_end = gauge("plumbline_retrain_last_end_timestamp_seconds")
        last_duration = gauge("plumbline_retrain_last_duration_seconds")
        if finished and finished[0].finished_at:
            last_end.add_metric([], finished[0].finished_at)
            last_duration.add_metric([], finished[0].finished_at - finished[0].started_at)
        triggers = counter("plumbline_retrain_triggers_total", ["outcome"])
        for outcome in TRIGGER_OUTCOMES:
            triggers.add_metric([outcome], float(c[f"trigger.{outcome}"]))
        yield from (runs, running, last_failed, last_end, last_duration, triggers)


def render(monitor: Monitor, *extra: Any) -> tuple[bytes, str]:
    """``extra``: more collectors (objects with ``collect()``), e.g. the rollout's."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(monitor))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
