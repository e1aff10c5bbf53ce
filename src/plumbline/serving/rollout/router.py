"""A second model beside the champion: shadow and canary scoring inside an inference worker.

The worker holds the champion (:class:`plumbline.serving.reload.ModelManager`) and, once a
rollout is on, a second manager for ``serve.rollout.challenger_alias``: loaded, smoke-checked
and hot-reloaded the same way, but with no local fallback and with its own series and shared
state, so a challenger that fails to load never touches the champion or ``/ready``.

* **shadow**: the whole batch is scored by the champion and answered exactly as with the
  rollout off; the batch is then handed to the worker's shadow thread, which scores it with
  the challenger in one vectorised call and logs the row with both scores under the one
  request id. The answers never wait for the challenger: a batch that finds
  ``shadow_queue_batches`` waiting is logged without its shadow score (``busy``), and a
  circuit breaker pauses shadow scoring for ``shadow_cooloff_s`` after
  ``shadow_budget_calls`` calls in a row over ``shadow_budget_ms`` (``over_budget``). A
  challenger that raises is counted; the answers are already the champion's.
* **canary**: each request goes to the challenger when its share (a hash of the sticky key,
  else a random draw) is below ``canary_fraction``; the challenger's requests are scored
  together, the others by the champion. A failing challenger, or one that failed to load,
  sends its requests to the champion, counted as errors; while its first load is still
  running they are counted as skipped (``loading``), not as errors. ``model_version`` names
  who answered.

The mode and fraction live in the server's shared state (``rollout``), written by
``POST /admin/rollout``; a watcher thread reads them every 50 ms, so a batch sees one mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from plumbline.serving.metrics import ArmMetrics
from plumbline.serving.predlog_writer import Batch, PredictionLog
from plumbline.serving.reload import ModelManager
from plumbline.serving.settings import RolloutConfig
from plumbline.serving.source import ServedModel

log = logging.getLogger("plumbline.serving")

ROLLOUT_KEY = "rollout"  # shared state: {"mode", "canary_fraction", "seq"}
REQUEST_ID_KEY = "x-request-id"

Output = tuple[int, bytes]


def worker_rollout_key(worker_id: int) -> str:
    return f"rollout-worker-{worker_id}"


def challenger_key(worker_id: int) -> str:
    return f"challenger-worker-{worker_id}"


@dataclass(frozen=True)
class RolloutState:
    mode: str = "off"
    canary_fraction: float = 0.0
    seq: int = 0  # bumped by every POST /admin/rollout; workers report the one they applied

    @classmethod
    def from_config(cls, cfg: RolloutConfig) -> RolloutState:
        return cls(cfg.mode, cfg.canary_fraction, 0)

    @classmethod
    def from_shared(cls, raw: Any, default: RolloutState) -> RolloutState:
        if not isinstance(raw, dict):
            return default
        return cls(str(raw["mode"]), float(raw["canary_fraction"]), int(raw.get("seq", 0)))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "canary_fraction": self.canary_fraction, "seq": self.seq}


def sticky_share(key: str) -> float:
    """A key's place in [0, 1): the same in every process and run (not Python's hash)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sticky_header(sticky_key: str | None, features: Sequence[str]) -> str | None:
    """The header the HTTP process must forward, if the sticky key is one (lowercase)."""
    if sticky_key is None or sticky_key in features or sticky_key.lower() == REQUEST_ID_KEY:
        return None
    return sticky_key.lower()


class ArmChooser:
    """Which arm answers a request in canary mode."""

    def __init__(
        self, sticky_key: str | None, features: Sequence[str], rng: random.Random | None = None
    ) -> None:
        self.sticky_key = sticky_key
        self.position = (
            list(features).index(sticky_key)
            if sticky_key is not None and sticky_key in features
            else None
        )
        self.by_request_id = sticky_key is not None and sticky_key.lower() == REQUEST_ID_KEY
        self.rng = rng or random.Random()

    def key(self, request: Sequence[Any]) -> str | None:
        """The request's sticky key: the field of its first record, its id, or the header."""
        if self.sticky_key is None:
            return None
        if self.by_request_id:
            return str(request[0])
        if self.position is not None:
            rows = request[2]
            return None if not rows else str(rows[0][self.position])
        return request[5] if len(request) > 5 and request[5] is not None else None

    def challenger(self, request: Sequence[Any], fraction: float) -> bool:
        key = self.key(request)
        share = sticky_share(key) if key is not None else self.rng.random()
        return share < fraction


def encode(
    model: ServedModel,
    request_id: str,
    single: bool,
    probabilities: list[float],
    labels: list[int],
) -> bytes:
    """One answer, byte for byte what :meth:`PredictAPI.predict` writes with the rollout off."""
    if single:
        return orjson.dumps(
            {
                "probability": probabilities[0],
                "label": labels[0],
                "model_name": model.name,
                "model_version": model.version,
                "request_id": request_id,
            }
        )
    return orjson.dumps(
        [
            {
                "probability": p,
                "label": lab,
                "model_name": model.name,
                "model_version": model.version,
                "request_id": request_id,
            }
            for p, lab in zip(probabilities, labels, strict=True)
        ]
    )


class Breaker:
    """Pauses shadow scoring after ``calls`` challenger calls in a row over ``budget_s``."""

    def __init__(
        self,
        budget_s: float,
        calls: int,
        cooloff_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_s = budget_s
        self.calls = calls
        self.cooloff_s = cooloff_s
        self.clock = clock
        self.over = 0
        self.until = 0.0

    def paused(self) -> bool:
        return self.clock() < self.until

    def record(self, seconds: float) -> bool:
        """One call's time; True when it opens the breaker."""
        self.over = self.over + 1 if seconds > self.budget_s else 0
        if self.over >= self.calls:
            self.over = 0
            self.until = self.clock() + self.cooloff_s
            return True
        return False


@dataclass
class _ShadowJob:
    batch: Batch
    challenger: ServedModel


class ChallengerManager(ModelManager):
    """The challenger's loader: publishes under its own key, never to ``/ready``'s."""

    def _state(self) -> tuple[str, dict[str, Any]]:
        return challenger_key(self.worker_id), self._model_state()


class Rollout:
    """The rollout side of one inference worker."""

    def __init__(
        self,
        cfg: RolloutConfig,
        features: Sequence[str],
        threshold: float,
        metrics: ArmMetrics,
        predlog: PredictionLog | None,
        scored: Callable[[int, np.ndarray, np.ndarray], None],
        challenger_factory: Callable[[], ModelManager] | None,
        shared: Any | None = None,
        worker_id: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        """``scored`` records a batch in the server's own series (ServeMetrics.scored);
        ``challenger_factory`` makes the challenger's manager (started on the first rollout)."""
        self.default = RolloutState.from_config(cfg)
        self.state = self.default
        self.chooser = ArmChooser(cfg.sticky_key, features, rng)
        self.threshold = threshold
        self.metrics = metrics
        self.predlog = predlog
        self.scored = scored
        self.challenger_factory = challenger_factory
        self.challenger: ModelManager | None = None
        self.shared = shared
        self.worker_id = worker_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.breaker = Breaker(
            cfg.shadow_budget_ms / 1e3, cfg.shadow_budget_calls, cfg.shadow_cooloff_s
        )
        self._shadow_queue: queue.Queue[_ShadowJob | None] = queue.Queue(cfg.shadow_queue_batches)
        self._shadow_thread: threading.Thread | None = None
        self.metrics.mode_changed(self.state.mode, self.state.canary_fraction)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._apply(self.state)
        self._thread = threading.Thread(target=self._run, name="rollout-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.challenger is not None:
            self.challenger.stop()
        if self._shadow_thread is not None:
            # A hung challenger must not hold up the shutdown: the thread is a daemon.
            with contextlib.suppress(queue.Full):
                self._shadow_queue.put(None, timeout=1.0)
            self._shadow_thread.join(timeout=5.0)
        self.metrics.flush()

    def drain(self) -> None:
        """Wait until the shadow thread scored every batch handed to it."""
        self._shadow_queue.join()

    def _run(self) -> None:
        published = 0.0
        while not self._stop.wait(0.05):
            raw = self._shared_get(ROLLOUT_KEY)
            state = RolloutState.from_shared(raw, self.default)
            if state != self.state:
                self._apply(state)
                published = 0.0
            if self.challenger is None:
                self.metrics.flush()  # else the challenger's watcher flushes them
            if time.monotonic() - published > 0.5:
                self._publish()
                published = time.monotonic()

    def _apply(self, state: RolloutState) -> None:
        if state.mode != "off" and self.challenger is None and self.challenger_factory:
            self.challenger = self.challenger_factory()
            self.challenger.start()
        if state.mode != self.state.mode or state.canary_fraction != self.state.canary_fraction:
            log.info(
                "worker %s: rollout %s%s",
                self.worker_id,
                state.mode,
                f" (fraction {state.canary_fraction:g})" if state.mode == "canary" else "",
            )
        if state.mode != self.state.mode:
            self.metrics.reset_totals()  # the counts of /admin/rollout are this mode's
        self.state = state  # one reference assignment: a batch reads it once
        self.metrics.mode_changed(state.mode, state.canary_fraction)

    def _shared_get(self, key: str) -> Any:
        if self.shared is None:
            return None
        try:
            return self.shared.get(key)
        except Exception:  # the manager is gone: shutting down
            self._stop.set()
            return None

    def _publish(self) -> None:
        if self.shared is None:
            return
        model = self.challenger.active if self.challenger is not None else None
        try:
            self.shared[worker_rollout_key(self.worker_id)] = {
                **self.state.to_dict(),
                "pid": os.getpid(),
                "challenger": model.describe() if model else None,
                "challenger_error": self.challenger.last_error if self.challenger else None,
                "arms": self.metrics.snapshot(),
                "skipped": self.metrics.skipped_snapshot(),
                "shadow_paused": self.breaker.paused(),
            }
        except Exception:
            log.debug("could not publish the rollout state", exc_info=True)

    # --- scoring ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.state.mode != "off"

    def predict(self, requests: Sequence[Sequence[Any]], champion: ServedModel) -> list[Output]:
        state = self.state  # read once: the whole batch under one mode
        challenger = self.challenger.active if self.challenger is not None else None
        if state.mode == "canary":
            return self._canary(requests, champion, challenger, state)
        return self._shadow(requests, champion, challenger, state)  # "off": switched meanwhile

    def _score(
        self, model: ServedModel, requests: Sequence[Sequence[Any]]
    ) -> tuple[list[tuple[Any, ...]], list[int], np.ndarray, float]:
        rows: list[tuple[Any, ...]] = []
        counts: list[int] = []
        for request in requests:
            rows.extend(request[2])
            counts.append(len(request[2]))
        started = time.perf_counter()
        probabilities = model.scorer.proba(rows)
        return rows, counts, probabilities, time.perf_counter() - started

    def _answers(
        self,
        model: ServedModel,
        requests: Sequence[Sequence[Any]],
        counts: list[int],
        probabilities: np.ndarray,
        labels: np.ndarray,
    ) -> list[bytes]:
        p_list = probabilities.tolist()
        l_list = labels.tolist()
        out: list[bytes] = []
        start = 0
        for request, n in zip(requests, counts, strict=True):
            out.append(
                encode(
                    model,
                    request[0],
                    request[3],
                    p_list[start : start + n],
                    l_list[start : start + n],
                )
            )
            start += n
        return out

    def _pending(self, requests: int) -> None:
        """The challenger is due but not loaded: still loading is no error, a failed load is."""
        manager = self.challenger
        if manager is not None and manager.last_error is None:
            self.metrics.skip("loading", requests)
        else:
            self.metrics.failed("challenger", "unavailable", requests)

    def _shadow(
        self,
        requests: Sequence[Sequence[Any]],
        champion: ServedModel,
        challenger: ServedModel | None,
        state: RolloutState,
    ) -> list[Output]:
        rows, counts, probabilities, seconds = self._score(champion, requests)
        labels = (probabilities >= self.threshold).astype(np.int64)
        bodies = self._answers(champion, requests, counts, probabilities, labels)
        received = [float(r[1]) for r in requests]
        self.scored(len(requests), probabilities, labels)
        self.metrics.scored("champion", probabilities, labels, seconds, received)
        batch = Batch(
            request_ids=[r[0] for r in requests],
            row_counts=counts,
            received_at=received,
            model_name=champion.name,
            model_version=champion.version,
            rows=rows,
            probabilities=probabilities,
            labels=labels,
            arm="champion",
            rollout=state.mode,
        )
        if state.mode != "shadow":  # the rollout was turned off after this batch started
            self._log(batch)
        elif challenger is None:
            self._pending(len(requests))
            self._log(batch)
        elif self.breaker.paused():
            self.metrics.skip("over_budget", len(requests))
            self._log(batch)
        else:
            self._start_shadow_thread()
            try:
                self._shadow_queue.put_nowait(_ShadowJob(batch, challenger))
            except queue.Full:
                self.metrics.skip("busy", len(requests))
                self._log(batch)
        return [(200, body) for body in bodies]

    def _log(self, batch: Batch) -> None:
        if self.predlog is not None:
            self.predlog.append(batch)

    def _start_shadow_thread(self) -> None:
        if self._shadow_thread is None:
            self._shadow_thread = threading.Thread(
                target=self._shadow_run, name="rollout-shadow", daemon=True
            )
            self._shadow_thread.start()

    def _shadow_run(self) -> None:
        while True:
            job = self._shadow_queue.get()
            try:
                if job is None:
                    return
                self._shadow_score(job)
            except Exception:
                log.exception("shadow scoring failed")
            finally:
                self._shadow_queue.task_done()

    def _shadow_score(self, job: _ShadowJob) -> None:
        """The shadow thread: the challenger's scores of a batch already answered, then its log
        row with both scores."""
        batch, challenger = job.batch, job.challenger
        shadow: np.ndarray | None = None
        started = time.perf_counter()
        try:
            shadow = np.asarray(challenger.scorer.proba(batch.rows), dtype=np.float64)
            took = time.perf_counter() - started
            if shadow.shape != batch.probabilities.shape:
                raise ValueError(f"{len(shadow)} scores for {len(batch.rows)} rows")
            self.metrics.scored(
                "challenger",
                shadow,
                (shadow >= self.threshold).astype(np.int64),
                took,
                batch.received_at,
            )
        except Exception:
            log.exception("challenger %s failed in shadow mode", challenger.version)
            self.metrics.failed("challenger", "scoring", len(batch.request_ids))
            shadow = None
        if self.breaker.record(time.perf_counter() - started):
            log.warning(
                "worker %s: challenger over its shadow budget %d times in a row; shadow "
                "scoring paused for %gs",
                self.worker_id,
                self.breaker.calls,
                self.breaker.cooloff_s,
            )
        if shadow is not None:
            batch = replace(batch, shadow_version=challenger.version, shadow_probabilities=shadow)
        self._log(batch)

    def _canary(
        self,
        requests: Sequence[Sequence[Any]],
        champion: ServedModel,
        challenger: ServedModel | None,
        state: RolloutState,
    ) -> list[Output]:
        picked = [
            i for i, r in enumerate(requests) if self.chooser.challenger(r, state.canary_fraction)
        ]
        outputs: list[Output | None] = [None] * len(requests)
        to_champion = set(range(len(requests)))
        if picked and challenger is None:
            self._pending(len(picked))
        elif picked and challenger is not None:
            group = [requests[i] for i in picked]
            try:
                self._answer_group(group, picked, challenger, "challenger", state, outputs)
                to_champion -= set(picked)
            except Exception:
                log.exception("challenger %s failed in canary mode", challenger.version)
                self.metrics.failed("challenger", "scoring", len(picked))
        rest = sorted(to_champion)
        if rest:
            self._answer_group(
                [requests[i] for i in rest], rest, champion, "champion", state, outputs
            )
        return [o for o in outputs if o is not None]

    def _answer_group(
        self,
        group: list[Sequence[Any]],
        positions: list[int],
        model: ServedModel,
        arm: str,
        state: RolloutState,
        outputs: list[Output | None],
    ) -> None:
        rows, counts, probabilities, seconds = self._score(model, group)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (len(rows),):
            raise ValueError(f"{probabilities.shape} scores for {len(rows)} rows")
        labels = (probabilities >= self.threshold).astype(np.int64)
        bodies = self._answers(model, group, counts, probabilities, labels)
        for i, body in zip(positions, bodies, strict=True):
            outputs[i] = (200, body)
        received = [float(r[1]) for r in group]
        self.scored(len(group), probabilities, labels)
        self.metrics.scored(arm, probabilities, labels, seconds, received)
        if self.predlog is not None:
            self.predlog.append(
                Batch(
                    request_ids=[r[0] for r in group],
                    row_counts=counts,
                    received_at=received,
                    model_name=model.name,
                    model_version=model.version,
                    rows=rows,
                    probabilities=probabilities,
                    labels=labels,
                    arm=arm,
                    rollout=state.mode,
                )
            )
