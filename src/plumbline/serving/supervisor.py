"""Keeps the server's processes running: a dead scoring worker or HTTP process is replaced.

A thread of the main process checks every process of the server every ``CHECK_S``. A process
that is gone, whatever the cause (a signal such as an OOM kill, an exception that ended its
loop, a plain exit), is reaped, its metric files are released, and it is started again: a
scoring worker loads the alias's current version and must pass the smoke check before it
takes requests again, an HTTP process serves on the same listening socket. What the server
publishes in its shared state (key ``supervisor``) lets every HTTP process route only to
ready workers and fail, with 503 and ``Retry-After``, the requests it had queued on a worker
that died (each worker has a generation that grows with every death).

A process that dies again within ``stable_s`` of its start is in a crash loop: the first
death is restarted at once, each further one waits twice as long as the one before, from
``backoff_s`` up to ``backoff_max_s``. Every replacement
is counted in ``plumbline_worker_restarts_total{role}``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("plumbline.serving")

SUPERVISOR_KEY = "supervisor"
CHECK_S = 0.1


def backoff_delay(quick_deaths: int, base_s: float, max_s: float) -> float:
    """Wait before restart number ``quick_deaths`` of a crash loop (0: the first death after
    a stable run is restarted at once)."""
    if quick_deaths <= 0:
        return 0.0
    return float(min(max_s, base_s * 2 ** (quick_deaths - 1)))


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is gone"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass
class Slot:
    role: str  # "inference" or "http"
    index: int
    started_at: float
    generation: int = 0
    quick_deaths: int = 0
    restart_at: float | None = None
    reason: str | None = None
    pid: int | None = None


@dataclass
class SupervisorHooks:
    """What the supervisor needs from the server (kept narrow so the logic is testable)."""

    inference: list[Any]  # the worker processes, replaced in place
    http: dict[int, Any]  # the HTTP processes by index, replaced in place
    start_inference: Callable[[int], Any]
    start_http: Callable[[int], Any]
    publish: Callable[[dict[str, Any]], None]  # the supervisor state, for the HTTP processes
    worker_lost: Callable[[int, str], None]  # mark worker i not ready, with the reason
    process_dead: Callable[[int], None]  # release a dead pid's metric files
    restarted: Callable[[str], None]  # count a replacement (role)
    stopping: Callable[[], bool]
    lock: threading.Lock  # held while starting a process; shutdown takes it too
    warm: Callable[[], None] | None = None  # run once, at low priority, after the start


class Supervisor:
    def __init__(
        self, hooks: SupervisorHooks, backoff_s: float, backoff_max_s: float, stable_s: float
    ) -> None:
        self.hooks = hooks
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stable_s = stable_s
        now = time.monotonic()
        self.slots: dict[tuple[str, int], Slot] = {}
        for i, proc in enumerate(hooks.inference):
            self.slots["inference", i] = Slot("inference", i, now, pid=proc.pid)
        for i, proc in hooks.http.items():
            self.slots["http", i] = Slot("http", i, now, pid=proc.pid)
        self._thread: threading.Thread | None = None
        self._warm_thread: threading.Thread | None = None

    def start(self) -> None:
        self.hooks.publish(self.state())
        self._thread = threading.Thread(target=self._run, name="plumbline-supervisor", daemon=True)
        self._thread.start()

    def state(self) -> dict[str, Any]:
        workers = [self.slots["inference", i] for i in range(len(self.hooks.inference))]
        http = [self.slots["http", i] for i in sorted(self.hooks.http)]
        return {
            "generation": [s.generation for s in workers],
            "alive": [s.restart_at is None for s in workers],
            "pid": [s.pid for s in workers],
            "reason": [s.reason for s in workers],
            "http_alive": [s.restart_at is None for s in http],
            "http_reason": [s.reason for s in http],
        }

    def _warm(self) -> None:
        assert self.hooks.warm is not None
        try:
            started = time.monotonic()
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            self.hooks.warm()
            log.info(
                "supervisor: imports of a replacement worker preloaded in %.1fs",
                time.monotonic() - started,
            )
        except Exception:
            log.warning("supervisor: warming up failed", exc_info=True)

    def _warmed(self) -> None:
        """Before forking: let a running warm-up finish (at full priority), so that no
        import is half done in the child."""
        thread = self._warm_thread
        if thread is not None and thread.is_alive():
            if thread.native_id is not None:
                os.setpriority(os.PRIO_PROCESS, thread.native_id, 0)
            thread.join(60)

    def _run(self) -> None:
        if self.hooks.warm is not None:
            self._warm_thread = threading.Thread(
                target=self._warm, name="plumbline-warm", daemon=True
            )
            self._warm_thread.start()
        while not self.hooks.stopping():
            try:
                if self.check():
                    self.hooks.publish(self.state())
            except Exception:
                log.exception("supervisor: checking the server's processes failed")
            time.sleep(CHECK_S)

    def check(self) -> bool:
        """One pass: note dead processes, start those whose wait is over; True if changed."""
        changed = False
        now = time.monotonic()
        for (role, i), slot in self.slots.items():
            procs: Any = self.hooks.inference if role == "inference" else self.hooks.http
            proc = procs[i]
            if slot.restart_at is None and not proc.is_alive():  # is_alive() reaps it
                self._died(slot, proc, now)
                changed = True
            if slot.restart_at is not None and now >= slot.restart_at:
                self._warmed()
                with self.hooks.lock:
                    if self.hooks.stopping():
                        return changed
                    procs[i] = (
                        self.hooks.start_inference(i)
                        if role == "inference"
                        else self.hooks.start_http(i)
                    )
                slot.pid = procs[i].pid
                slot.started_at = time.monotonic()
                slot.restart_at = None
                self.hooks.restarted(role)
                log.warning("supervisor: started %s again (pid %s)", _name(slot), slot.pid)
                changed = True
        return changed

    def _died(self, slot: Slot, proc: Any, now: float) -> None:
        proc.join(0)
        if proc.pid:
            self.hooks.process_dead(proc.pid)
        lived = now - slot.started_at
        slot.quick_deaths = slot.quick_deaths + 1 if lived < self.stable_s else 0
        # The first death (of a run, or right after the start) is restarted at once.
        delay = backoff_delay(slot.quick_deaths - 1, self.backoff_s, self.backoff_max_s)
        slot.generation += 1
        slot.reason = f"{_name(slot)} (pid {proc.pid}) {describe_exit(proc.exitcode)}"
        slot.restart_at = now + delay
        log.error(
            "supervisor: %s after %.1fs; restarting it%s",
            slot.reason,
            lived,
            f" in {delay:.1f}s (crash {slot.quick_deaths} in a row)" if delay else "",
        )
        if slot.role == "inference":
            self.hooks.worker_lost(slot.index, slot.reason + "; a new worker is starting")


def _name(slot: Slot) -> str:
    return (
        f"scoring worker {slot.index}" if slot.role == "inference" else f"HTTP process {slot.index}"
    )
