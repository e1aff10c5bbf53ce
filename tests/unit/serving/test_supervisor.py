"""The supervisor's decisions, on stand-in processes: who is restarted, when, and what the
HTTP processes are told (the real processes: tests/integration/serving/test_supervisor.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from plumbline.serving.supervisor import (
    Supervisor,
    SupervisorHooks,
    backoff_delay,
    describe_exit,
)


class FakeProcess:
    pids = iter(range(1000, 2000))

    def __init__(self) -> None:
        self.pid = next(self.pids)
        self.exitcode: int | None = None

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        pass


def _supervisor(stable_s: float = 30.0) -> tuple[Supervisor, dict[str, Any]]:
    seen: dict[str, Any] = {"lost": [], "dead": [], "restarted": [], "published": []}
    hooks = SupervisorHooks(
        inference=[FakeProcess(), FakeProcess()],
        http={0: FakeProcess()},
        start_inference=lambda i: FakeProcess(),
        start_http=lambda i: FakeProcess(),
        publish=seen["published"].append,
        worker_lost=lambda i, reason: seen["lost"].append((i, reason)),
        process_dead=seen["dead"].append,
        restarted=seen["restarted"].append,
        stopping=lambda: seen.get("stopping", False),
        lock=threading.Lock(),
    )
    return Supervisor(hooks, backoff_s=1.0, backoff_max_s=8.0, stable_s=stable_s), seen


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 1.0, 8.0) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_exit_descriptions() -> None:
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"


def test_a_dead_worker_is_reported_and_replaced_at_once() -> None:
    sup, seen = _supervisor()
    old = sup.hooks.inference[1]
    old.exitcode = -signal.SIGKILL
    assert sup.check()
    state = sup.state()
    assert state["generation"] == [0, 1]  # requests held by worker 1 are failed by this
    assert seen["dead"] == [old.pid]
    assert seen["lost"][0][0] == 1 and "was killed by SIGKILL" in seen["lost"][0][1]
    # the first death after a stable run: started again in the same pass
    assert sup.hooks.inference[1] is not old and sup.hooks.inference[1].is_alive()
    assert seen["restarted"] == ["inference"]
    assert sup.state()["alive"] == [True, True]


def test_a_crash_loop_backs_off() -> None:
    sup, seen = _supervisor(stable_s=3600)  # every death counts as quick
    delays = []
    for _ in range(5):
        sup.hooks.inference[0].exitcode = 1
        sup.check()
        slot = sup.slots["inference", 0]
        if slot.restart_at is None:
            delays.append(0.0)  # started again in the same pass
            continue
        delays.append(round(slot.restart_at - slot.started_at, 1))
        assert sup.state()["alive"][0] is False  # /ready and routing see it missing
        slot.restart_at = 0.0  # the wait is over
        sup.check()
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert seen["restarted"] == ["inference"] * 5
    assert sup.state()["generation"] == [5, 0]


def test_a_dead_http_process_is_replaced_and_nothing_starts_while_stopping() -> None:
    sup, seen = _supervisor()
    sup.hooks.http[0].exitcode = -signal.SIGTERM
    seen["stopping"] = True
    sup.check()
    assert seen["restarted"] == [] and not sup.hooks.http[0].is_alive()
    seen["stopping"] = False
    sup.check()
    assert seen["restarted"] == ["http"] and sup.hooks.http[0].is_alive()
    assert seen["lost"] == []  # an HTTP process holds no worker's requests
