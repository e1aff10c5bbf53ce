"""The model held by one inference worker, and how it is replaced without dropping requests.

A background thread of the worker loads the first model, then watches for two triggers:

* the registry alias moved (checked every ``serve.poll_interval_s``);
* an admin reload (``POST /admin/reload`` bumps ``reload_request`` in the shared state).

A new version is loaded beside the serving one, its scorer compiled and smoke-checked, and only
then swapped in with one reference assignment; the scoring loop reads the reference once per
batch, so each batch (and each response) is produced by exactly one version, named in the
response. A version that fails to load or fails the smoke check is rejected, logged and
counted, and the old one keeps serving; the poller does not retry a rejected version until the
alias moves again (an admin reload retries it).

The worker publishes its state (``worker-<id>`` in the shared state) for ``/ready`` and the
admin endpoint, which run in the HTTP processes.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from plumbline.serving.metrics import ServeMetrics
from plumbline.serving.source import (
    ModelSource,
    PrefetchedLoadError,
    ServedModel,
    SourceUnavailable,
)

log = logging.getLogger("plumbline.serving")

RELOAD_REQUEST = "reload_request"


def worker_key(worker_id: int) -> str:
    return f"worker-{worker_id}"


class ModelManager:
    def __init__(
        self,
        source: ModelSource,
        metrics: ServeMetrics,
        shared: Any | None,
        worker_id: int,
        poll_interval_s: float,
        prefetch_dir: Path | None = None,
    ) -> None:
        self.source = source
        self.prefetch_dir = prefetch_dir
        self.metrics = metrics
        self.shared = shared
        self.worker_id = worker_id
        self.poll_interval_s = poll_interval_s
        self.active: ServedModel | None = None
        self.rejected: dict[str, str] = {}
        self.last_error: str | None = None
        self.handled_request = 0
        self.last_result: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # --- the watcher ------------------------------------------------------------------------

    def _run(self) -> None:
        if self.shared is not None:
            # An admin request made before this worker started is not for this worker.
            self.handled_request = int(self._shared_get(RELOAD_REQUEST) or 0)
        if self.prefetch_dir is not None:
            with self._lock:
                self._startup_prefetched(self.prefetch_dir)
            self._publish()
        else:
            self.refresh(reason="startup")
        next_poll = time.monotonic() + self.poll_interval_s
        polled = False
        while not self._stop.wait(0.05):
            self.metrics.flush()  # the scoring loop only notes its batches
            requested = int(self._shared_get(RELOAD_REQUEST) or 0)
            if requested > self.handled_request:
                self.last_result = self.refresh(reason="admin", force=True)
                self.handled_request = requested
                self._publish()
                next_poll = time.monotonic() + self.poll_interval_s
            elif time.monotonic() >= next_poll:
                self.refresh(reason="poll")
                next_poll = time.monotonic() + self.poll_interval_s
                if not polled:  # the first check imported MLflow: freeze it like the rest
                    polled = True
                    gc.freeze()

    def _shared_get(self, key: str) -> Any:
        if self.shared is None:
            return None
        try:
            return self.shared.get(key)
        except Exception:  # the manager is gone: the server is shutting down
            self._stop.set()
            return None

    # --- loading ----------------------------------------------------------------------------

    def _startup_prefetched(self, directory: Path) -> None:
        """Serve the champion that the main process fetched while the server started."""
        try:
            candidate = self.source.load_prefetched(directory, timeout_s=60)
        except SourceUnavailable as err:
            self._fallback(err)
            return
        except PrefetchedLoadError as err:
            self.rejected[err.version] = err.reason
            self.metrics.reload(success=False)
            log.error("model version %s rejected (%s)", err.version, err.reason)
            self._fallback(SourceUnavailable(f"version {err.version} rejected: {err.reason}"))
            return
        self._swap(candidate, "startup", 0.0)

    def refresh(self, reason: str, force: bool = False) -> dict[str, Any]:
        """Serve the alias's current version if it is new (or ``force``); returns the result."""
        with self._lock:
            result = self._refresh(reason, force)
        self._publish()
        return result

    def _refresh(self, reason: str, force: bool) -> dict[str, Any]:
        current = self.active
        try:
            version = self.source.registry_version()
        except SourceUnavailable as err:
            if current is not None:
                if reason != "poll":
                    log.warning(
                        "registry check (%s): %s; still serving %s", reason, err, current.version
                    )
                return self._result("unchanged", current, reason=str(err))
            return self._fallback(err)
        if current is not None and current.source == "registry" and current.version == version:
            return self._result("unchanged", current)
        if version in self.rejected and not force:
            return self._result(
                "unchanged",
                current,
                reason=f"version {version} was rejected: {self.rejected[version]}",
            )
        started = time.perf_counter()
        try:
            candidate = self.source.load_registry(version)
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            self.rejected[version] = message
            self.metrics.reload(success=False)
            log.error(
                "model version %s rejected (%s); %s",
                version,
                message,
                f"still serving {current.version}" if current else "no model is serving",
            )
            if current is None:
                self.last_error = f"version {version} rejected: {message}"
                fallback = self._fallback(SourceUnavailable(self.last_error))
                if fallback["status"] == "loaded":
                    fallback["rejected"] = {"version": version, "reason": message}
                    return fallback
            return self._result("rejected", current, version=version, reason=message)
        self.rejected.pop(version, None)
        self._swap(candidate, reason, time.perf_counter() - started)
        return self._result("loaded", candidate)

    def _fallback(self, cause: Exception) -> dict[str, Any]:
        if self.active is not None:
            return self._result("unchanged", self.active, reason=str(cause))
        try:
            candidate = self.source.load_local()
        except SourceUnavailable as err:
            self.last_error = f"{cause}; {err}"
            log.error("not ready: %s", self.last_error)
            self.metrics.not_ready()
            return self._result("unavailable", None, reason=self.last_error)
        except Exception as err:
            self.last_error = f"{cause}; local fallback rejected: {type(err).__name__}: {err}"
            self.metrics.reload(success=False)
            log.error("not ready: %s", self.last_error)
            self.metrics.not_ready()
            return self._result("unavailable", None, reason=self.last_error)
        log.warning("registry model unavailable (%s); serving the local fallback", cause)
        self._swap(candidate, "fallback", 0.0)
        return self._result("loaded", candidate)

    def _swap(self, candidate: ServedModel, reason: str, seconds: float) -> None:
        previous = self.active
        if previous is None:
            # The first load imported sklearn and skops: hundreds of thousands of objects
            # that live as long as the process. Keep them out of the collector's full passes
            # (a 200 ms pause of the scoring loop otherwise), before serving.
            gc.freeze()
        self.active = candidate  # one reference assignment: batches see old or new, never mixed
        self.last_error = None
        self.metrics.reload(success=True)
        self.metrics.model_loaded(candidate.name, candidate.version, candidate.source)
        log.info(
            "serving %s version %s from %s (%s, %s scorer%s)%s",
            candidate.name,
            candidate.version,
            candidate.source,
            reason,
            candidate.scorer.kind,
            f", loaded in {seconds:.2f}s" if seconds else "",
            f"; replaced {previous.version}" if previous else "",
        )

    def _result(self, status: str, model: ServedModel | None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"status": status, "worker": self.worker_id}
        if model is not None:
            out.update(model_version=model.version, model_name=model.name, source=model.source)
        out.update(extra)
        return out

    def _state(self) -> tuple[str, dict[str, Any]]:
        """Where this loader publishes its state in ``shared``, and the state."""
        state = self._model_state()
        state.update(handled_reload=self.handled_request, last_reload=self.last_result)
        return worker_key(self.worker_id), state

    def _model_state(self) -> dict[str, Any]:
        model = self.active
        return {
            "pid": os.getpid(),
            "ready": model is not None,
            "model": model.describe() if model else None,
            "error": self.last_error,
        }

    def _publish(self) -> None:
        if self.shared is None:
            return
        key, state = self._state()
        try:
            self.shared[key] = state
        except Exception:
            log.debug("could not publish the state under %s", key, exc_info=True)
