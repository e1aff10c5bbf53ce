"""Prometheus metrics of the server, correct across all of its processes.

LitServe runs HTTP and scoring in separate processes, so the server uses prometheus-client's
multiprocess mode: every process writes its samples to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (served by whichever HTTP process gets the
scrape) adds them up. Who records what:

=====================================  ==========  ==========================================
series                                 recorded in  meaning
=====================================  ==========  ==========================================
plumbline_http_requests_total          HTTP         requests by route, method and status
plumbline_http_request_duration_seconds HTTP        latency histogram by route
plumbline_validation_failures_total    HTTP         rejected inputs, by contract field
plumbline_batch_size                   worker       requests per scoring call
plumbline_batch_rows                   worker       rows per scoring call
plumbline_prediction_score             worker       histogram of positive-class probabilities
plumbline_predictions_total            worker       predictions by label (positive rate =
                                                    rate of label="1" / rate of all)
plumbline_predicted_positive_ratio     worker       share of positive labels, last 1,000 rows
plumbline_model_info                   worker       1 for the model name/version being served
plumbline_model_ready                  worker       1 once a model passed its smoke check
plumbline_model_reloads_total          worker       reloads by result (success / failure)
plumbline_prediction_log_rows_total    worker       rows written to the prediction log
plumbline_prediction_log_dropped_rows_total worker  rows dropped: more than max_pending_rows
                                                    waited for the writer
plumbline_prediction_log_write_failures_total worker failed writes (disk full, permissions...)
plumbline_prediction_log_pending_rows  worker       rows in memory waiting to be written
plumbline_worker_restarts_total        main         dead processes replaced, by role
                                                    (``inference`` / ``http``)
=====================================  ==========  ==========================================

The environment variable must be set before ``prometheus_client`` is first imported in the
main process (:func:`prepare_multiprocess_dir`); forked HTTP processes and spawned workers
inherit it. Nothing here imports ``prometheus_client`` at module level for that reason.

The rollout's series, by arm (``champion`` / ``challenger``), recorded in the workers
(:class:`ArmMetrics`).

The server's own series keep their meaning whatever the
rollout mode: they describe the answers clients got. These add the per-arm view:

=============================================  ===========================================
series                                         meaning
=============================================  ===========================================
plumbline_rollout_requests_total               requests scored by each arm (in shadow mode
                                               the challenger scores every request too)
plumbline_rollout_errors_total                 per arm and ``kind``: ``scoring`` (the model
                                               raised) or ``unavailable`` (the
                                               challenger's load failed); each such request
                                               was answered by the champion
plumbline_rollout_challenger_skipped_total     requests the challenger was due to score but
                                               did not, by ``reason``: ``loading`` (its
                                               first load not finished), ``over_budget``
                                               (shadow scoring paused by the circuit
                                               breaker), ``busy`` (the shadow queue full);
                                               not errors
plumbline_rollout_request_duration_seconds     received by the server until scored, per arm
plumbline_rollout_scoring_seconds              one vectorised scoring call, per arm
plumbline_rollout_score                        histogram of positive-class probabilities
plumbline_rollout_predictions_total            predictions by arm and label
plumbline_rollout_mode                         1 for the current mode (off/shadow/canary)
plumbline_rollout_canary_fraction              the challenger's share in canary mode
plumbline_rollout_challenger_info              1 for the challenger version held
plumbline_rollout_challenger_ready             1 when every worker holds a smoke-checked
                                               challenger
plumbline_rollout_challenger_reloads_total     challenger loads by result
=============================================  ===========================================

Like the server's series, counts are gathered in memory on the scoring path and written to
the multiprocess files by the worker's watcher thread (:meth:`ArmMetrics.flush`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from bisect import bisect_left
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from plumbline.serving.compat import histogram_parts

ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.02,
    0.03,
    0.045,
    0.06,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ROW_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
POSITIVE_WINDOW = 1000
FLUSH_S = 0.25  # how often an HTTP process writes its request counts to the shared files


def prepare_multiprocess_dir(path: str | None = None) -> Path:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory (a new temporary one if unset).

    A directory given by the environment is emptied of old ``*.db`` files: samples of the
    processes of an earlier run must not be added to this run's.
    """
    given = path or os.environ.get(ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.db"):
            old.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="plumbline-metrics-"))
    os.environ[ENV] = str(directory)
    return directory


def remove_multiprocess_dir(directory: Path) -> None:
    if directory.name.startswith("plumbline-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)


class ServeMetrics:
    """The server's series; every method is a no-op when metrics are disabled."""

    def __init__(self, enabled: bool, role: str) -> None:
        """``role`` is "http", "worker" or "supervisor" (the main process): each process
        creates only the series it records (a series created elsewhere would add a stray 0
        sample of that process)."""
        self.enabled = enabled and ENV in os.environ
        self._recent: deque[tuple[int, int]] = deque()
        self._recent_rows = 0
        self._recent_positive = 0
        self._model_labels: tuple[str, str, str] | None = None
        self._http_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._pending_requests: dict[tuple[str, str, int], int] = {}
        self._pending_latency: dict[str, list[float]] = {}
        self._flush_scheduled = False
        self._pending_batches: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()
        if not self.enabled:
            return
        if role == "http":
            self._http_series()
        elif role == "supervisor":
            self._supervisor_series()
        else:
            self._worker_series()

    def _supervisor_series(self) -> None:
        from prometheus_client import Counter

        self.restarts = Counter(
            "plumbline_worker_restarts",
            "Server processes that died and were replaced, by role",
            ["role"],
        )
        for role in ("inference", "http"):
            self.restarts.labels(role)  # exported as 0 from the start: increase() needs it

    def _http_series(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "plumbline_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
        )
        self.latency = Histogram(
            "plumbline_http_request_duration_seconds",
            "Time from request received to response sent",
            ["route"],
            buckets=LATENCY_BUCKETS,
        )
        self.validation_failures = Counter(
            "plumbline_validation_failures", "Requests rejected by validation, by field", ["field"]
        )

    def _worker_series(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.batch_size = Histogram(
            "plumbline_batch_size", "Requests per scoring call", buckets=BATCH_BUCKETS
        )
        self.batch_rows = Histogram(
            "plumbline_batch_rows", "Rows per scoring call", buckets=ROW_BUCKETS
        )
        self.scores = Histogram(
            "plumbline_prediction_score",
            "Predicted probability of the positive class",
            buckets=SCORE_BUCKETS,
        )
        self.predictions = Counter("plumbline_predictions", "Predictions by label", ["label"])
        self.positive_ratio = Gauge(
            "plumbline_predicted_positive_ratio",
            f"Share of label 1 in the last {POSITIVE_WINDOW} predictions",
            multiprocess_mode="mostrecent",
        )
        self.model_info = Gauge(
            "plumbline_model_info",
            "The model being served (value 1)",
            ["model_name", "model_version", "source"],
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "plumbline_model_ready",
            "1 when a model is loaded and passed its smoke check",
            multiprocess_mode="livemin",
        )
        self.reloads = Counter("plumbline_model_reloads", "Model (re)loads by result", ["result"])
        self.log_rows = Counter("plumbline_prediction_log_rows", "Rows written to the log")
        self.log_dropped_rows = Counter(
            "plumbline_prediction_log_dropped_rows",
            "Rows not logged: more than serve.prediction_log.max_pending_rows were waiting",
        )
        self.log_write_failures = Counter(
            "plumbline_prediction_log_write_failures",
            "Failed prediction-log writes (the rows are kept and retried)",
        )
        self.log_pending_rows = Gauge(
            "plumbline_prediction_log_pending_rows",
            "Prediction-log rows in memory, waiting to be written",
            multiprocess_mode="livesum",
        )
        self._positive = self.predictions.labels(label="1")
        self._negative = self.predictions.labels(label="0")

    # --- HTTP processes ---------------------------------------------------------------------

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count a request; written to the shared files every FLUSH_S by the event loop.

        Each multiprocess sample write takes a lock and touches a memory-mapped file; per
        request that would be ~5 % of the server's CPU. Adding to plain ints here and writing
        the sums a few times a second costs almost nothing; a scrape sees at most FLUSH_S-old
        counts of the other HTTP processes (its own are flushed first).
        """
        if not self.enabled:
            return
        key = (route, method, status)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1
        latency = self._pending_latency.get(route)
        if latency is None:
            latency = self._pending_latency[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le-bucket (+Inf last)
        latency[-1] += seconds
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_S, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write this process's pending counts to the shared files."""
        if not self.enabled:
            return
        with self._lock:
            batches, self._pending_batches = self._pending_batches, []
        if batches:
            self._record_batches(batches)
        requests, self._pending_requests = self._pending_requests, {}
        for key, count in requests.items():
            child = self._http_children.get(key)
            if child is None:
                child = self._http_children[key] = self.requests.labels(key[0], key[1], str(key[2]))
            child.inc(count)
        latencies, self._pending_latency = self._pending_latency, {}
        for route, counts in latencies.items():
            hist = self._latency_children.get(route)
            if hist is None:
                hist = self._latency_children[route] = self.latency.labels(route)
            _add_to_histogram(hist, counts[:-1], counts[-1])

    def validation_failed(self, fields: set[str]) -> None:
        if not self.enabled:
            return
        for name in fields:
            self.validation_failures.labels(name).inc()

    # --- inference workers ------------------------------------------------------------------

    def scored(self, requests: int, probabilities: np.ndarray, labels: np.ndarray) -> None:
        """Note a scored batch; written to the shared files by :meth:`flush` (the worker's
        watcher thread calls it every 50 ms), not on the scoring path."""
        if not self.enabled:
            return
        with self._lock:
            self._pending_batches.append((requests, probabilities, labels))

    def _record_batches(self, batches: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        sizes = np.array([b[0] for b in batches], dtype=np.float64)
        rows = np.array([len(b[1]) for b in batches], dtype=np.float64)
        _observe_many(self.batch_size, sizes)
        _observe_many(self.batch_rows, rows)
        probabilities = np.concatenate([b[1] for b in batches])
        labels = np.concatenate([b[2] for b in batches])
        _observe_many(self.scores, probabilities)
        total = len(labels)
        positive = int(labels.sum())
        if positive:
            self._positive.inc(positive)
        if total - positive:
            self._negative.inc(total - positive)
        self._recent.append((total, positive))
        self._recent_rows += total
        self._recent_positive += positive
        while self._recent_rows - self._recent[0][0] >= POSITIVE_WINDOW:
            old_rows, old_positive = self._recent.popleft()
            self._recent_rows -= old_rows
            self._recent_positive -= old_positive
        self.positive_ratio.set(self._recent_positive / self._recent_rows)

    def model_loaded(self, name: str, version: str, source: str) -> None:
        if not self.enabled:
            return
        if self._model_labels is not None:
            self.model_info.labels(*self._model_labels).set(0)
        self._model_labels = (name, version, source)
        self.model_info.labels(name, version, source).set(1)
        self.model_ready.set(1)

    def not_ready(self) -> None:
        if self.enabled:
            self.model_ready.set(0)

    def reload(self, success: bool) -> None:
        if self.enabled:
            self.reloads.labels("success" if success else "failure").inc()

    def logged(self, rows: int) -> None:
        if self.enabled and rows:
            self.log_rows.inc(rows)

    def log_dropped(self, rows: int) -> None:
        if self.enabled and rows:
            self.log_dropped_rows.inc(rows)

    def log_write_failed(self, pending_rows: int) -> None:
        if self.enabled:
            self.log_write_failures.inc()
            self.log_pending_rows.set(pending_rows)

    def log_write_ok(self) -> None:
        if self.enabled:
            self.log_pending_rows.set(0)

    def worker_restarted(self, role: str) -> None:
        if self.enabled:
            self.restarts.labels(role).inc()


def _observe_many(histogram: Any, values: np.ndarray) -> None:
    """Observe many values with one write per bucket instead of one call per value."""
    parts = histogram_parts(histogram)
    if parts is None or len(values) < 4:
        for v in values.tolist():
            histogram.observe(v)
        return
    bounds = parts[0]
    index = np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left")
    counts = np.bincount(index, minlength=len(bounds))
    _add_to_histogram(histogram, counts.tolist(), float(values.sum()))


def _add_to_histogram(histogram: Any, counts: list[float], total: float) -> None:
    """Add pre-bucketed observations: ``counts[i]`` values fell in bucket ``i`` (the first
    upper bound >= the value, +Inf last), ``total`` is their sum (see compat.histogram_parts:
    prometheus-client has no public bulk observe)."""
    parts = histogram_parts(histogram)
    assert parts is not None
    _, buckets, sum_value = parts
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)
    sum_value.inc(total)


def render() -> tuple[bytes, str]:
    """All processes' samples in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    if ENV in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


ARMS = ("champion", "challenger")
MODES = ("off", "shadow", "canary")
ERROR_KINDS = ("scoring", "unavailable")
SKIP_REASONS = ("loading", "over_budget", "busy")


class ArmMetrics:
    """Per-arm series and the per-arm counts the worker publishes for ``/admin/rollout``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and ENV in os.environ
        self._lock = threading.Lock()
        self._pending: list[tuple[str, np.ndarray, np.ndarray, float, list[float]]] = []
        self._pending_errors: dict[tuple[str, str], int] = {}
        self._pending_skips: dict[str, int] = {}
        # Since the worker started (not reset with the mode): what `rollout status` shows.
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        # What the worker publishes (always kept, metrics on or off): per arm
        # requests, errors, scoring calls and their seconds.
        self.totals: dict[str, dict[str, float]] = {}
        self.reset_totals()
        self._challenger_labels: str | None = None
        if not self.enabled:
            return
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "plumbline_rollout_requests", "Requests scored by each rollout arm", ["arm"]
        )
        self.errors = Counter(
            "plumbline_rollout_errors",
            "Requests an arm failed (scoring raised, or no challenger loaded); the champion "
            "answered them",
            ["arm", "kind"],
        )
        self.skips = Counter(
            "plumbline_rollout_challenger_skipped",
            "Requests the challenger was due to score but did not (still loading, shadow "
            "paused over budget, shadow queue full); the champion answered them",
            ["reason"],
        )
        self.latency = Histogram(
            "plumbline_rollout_request_duration_seconds",
            "From the request's arrival at the server until the arm scored it",
            ["arm"],
            buckets=LATENCY_BUCKETS,
        )
        self.scoring = Histogram(
            "plumbline_rollout_scoring_seconds",
            "One vectorised scoring call of an arm",
            ["arm"],
            buckets=LATENCY_BUCKETS,
        )
        self.scores = Histogram(
            "plumbline_rollout_score",
            "Positive-class probability by arm",
            ["arm"],
            buckets=SCORE_BUCKETS,
        )
        self.predictions = Counter(
            "plumbline_rollout_predictions", "Predictions by arm and label", ["arm", "label"]
        )
        self.mode = Gauge(
            "plumbline_rollout_mode",
            "1 for the current rollout mode",
            ["mode"],
            multiprocess_mode="livemax",
        )
        self.fraction = Gauge(
            "plumbline_rollout_canary_fraction",
            "Share of requests the challenger answers in canary mode",
            multiprocess_mode="livemax",
        )
        self.challenger_info = Gauge(
            "plumbline_rollout_challenger_info",
            "The challenger version held (value 1)",
            ["model_version"],
            multiprocess_mode="livemax",
        )
        self.challenger_ready = Gauge(
            "plumbline_rollout_challenger_ready",
            "1 when the challenger is loaded and passed its smoke check",
            multiprocess_mode="livemin",
        )
        self.challenger_reloads = Counter(
            "plumbline_rollout_challenger_reloads", "Challenger (re)loads by result", ["result"]
        )
        for arm in ARMS:  # exported as 0 from the start: rate() and the alerts need them
            self.requests.labels(arm)
            for kind in ERROR_KINDS:
                self.errors.labels(arm, kind)
        for reason in SKIP_REASONS:
            self.skips.labels(reason)
        self.challenger_ready.set(0)

    def reset_totals(self) -> None:
        """A new mode: the published counts (the decider's error and latency limits) start
        again; the Prometheus counters go on (rules take rates)."""
        self.totals = {
            arm: {
                "requests": 0,
                "errors": 0,
                "scoring_calls": 0,
                "scoring_rows": 0,
                "scoring_seconds": 0.0,
            }
            for arm in ARMS
        }

    # --- the scoring path (cheap: appends only) ---------------------------------------------

    def scored(
        self,
        arm: str,
        probabilities: np.ndarray,
        labels: np.ndarray,
        seconds: float,
        received_at: list[float],
    ) -> None:
        t = self.totals[arm]
        t["requests"] += len(received_at)
        t["scoring_calls"] += 1
        t["scoring_rows"] += len(probabilities)
        t["scoring_seconds"] += seconds
        if self.enabled:
            with self._lock:
                self._pending.append((arm, probabilities, labels, seconds, received_at))

    def failed(self, arm: str, kind: str, requests: int) -> None:
        self.totals[arm]["errors"] += requests
        if self.enabled and requests:
            with self._lock:
                key = (arm, kind)
                self._pending_errors[key] = self._pending_errors.get(key, 0) + requests

    def skip(self, reason: str, requests: int) -> None:
        self.skipped[reason] += requests
        if self.enabled and requests:
            with self._lock:
                self._pending_skips[reason] = self._pending_skips.get(reason, 0) + requests

    # --- the watcher thread -----------------------------------------------------------------

    def flush(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            pending, self._pending = self._pending, []
            errors, self._pending_errors = self._pending_errors, {}
            skips, self._pending_skips = self._pending_skips, {}
        now = time.time()
        for arm, probabilities, labels, seconds, received in pending:
            self.requests.labels(arm).inc(len(received))
            self.scoring.labels(arm).observe(seconds)
            _observe_many(self.latency.labels(arm), now - np.asarray(received, dtype=np.float64))
            _observe_many(self.scores.labels(arm), probabilities)
            positive = int(labels.sum())
            if positive:
                self.predictions.labels(arm, "1").inc(positive)
            if len(labels) - positive:
                self.predictions.labels(arm, "0").inc(len(labels) - positive)
        for (arm, kind), count in errors.items():
            self.errors.labels(arm, kind).inc(count)
        for reason, count in skips.items():
            self.skips.labels(reason).inc(count)

    def mode_changed(self, mode: str, fraction: float) -> None:
        if self.enabled:
            for name in MODES:
                self.mode.labels(name).set(1.0 if name == mode else 0.0)
            self.fraction.set(fraction)

    # --- what the challenger's ModelManager reports (its ServeMetrics stand-in) -------------

    def reload(self, success: bool) -> None:
        if self.enabled:
            self.challenger_reloads.labels("success" if success else "failure").inc()

    def model_loaded(self, name: str, version: str, source: str) -> None:
        if self.enabled:
            if self._challenger_labels is not None:
                self.challenger_info.labels(self._challenger_labels).set(0)
            self._challenger_labels = version
            self.challenger_info.labels(version).set(1)
            self.challenger_ready.set(1)

    def not_ready(self) -> None:
        if self.enabled:
            self.challenger_ready.set(0)

    def snapshot(self) -> dict[str, Any]:
        return {arm: dict(values) for arm, values in self.totals.items()}

    def skipped_snapshot(self) -> dict[str, int]:
        return dict(self.skipped)
