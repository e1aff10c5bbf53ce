"""Prometheus series of a rollout, by arm (``champion`` / ``challenger``), recorded in the workers.

The server's own series (:mod:`plumbline.serving.metrics`) keep their meaning whatever the
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

import os
import threading
import time
from typing import Any

import numpy as np

from plumbline.serving.metrics import (
    ENV,
    LATENCY_BUCKETS,
    SCORE_BUCKETS,
    _observe_many,
)

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
