"""``plumbline monitor``: the monitoring service (FastAPI on uvicorn, default port 8001).

Routes:

* ``POST /feedback``: true outcomes by request id (+ row, default 0), one object, a list, or
  ``{"outcomes": [...]}``. The answer counts matched, unknown (no logged prediction with that
  id yet: kept, and joined once it appears) and duplicate outcomes (the first one is kept) and
  lists their ids; the same counts go to Prometheus.
* ``POST /alerts``: the Alertmanager webhook. A firing alert named in
  ``retrain.trigger_alerts`` starts a retrain (:mod:`plumbline.monitoring.retrain`) unless one
  is running, the cooldown lasts or there are too few new labels; the answer says which.
* ``POST /retrain`` (``?force=true`` skips cooldown and new-label checks), ``POST /refresh``,
  ``POST /report`` (writes the drift + live report), ``GET /status`` (JSON), ``GET /metrics``
  (Prometheus), ``GET /health``.

If the variable named by ``monitor.token_env`` is set, every POST needs it as a bearer token.
A background thread refreshes drift and live metrics every ``monitor.interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plumbline.core.bearer import refusal
from plumbline.core.contract import Contract
from plumbline.monitoring.monitor import Monitor, render
from plumbline.monitoring.retrain import Retrainer
from plumbline.monitoring.rollout.decide import Decider
from plumbline.monitoring.settings import Params
from plumbline.monitoring.store import Outcome

log = logging.getLogger("plumbline.monitor")

MAX_FEEDBACK_ITEMS = 100_000


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        max_length=128,
        description="The request id of the prediction (response field "
        "request_id, header X-Request-ID)",
    )
    row: int = Field(default=0, ge=0, description="Position of the record in its request")
    outcome: bool | int | str = Field(
        description='The true outcome: 0/1, false/true, or the target\'s label (e.g. "yes" / "no")'
    )


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str
    labels: dict[str, str] = Field(default_factory=dict)


class AlertmanagerWebhook(BaseModel):
    """The fields of Alertmanager's webhook payload (version 4) that the trigger reads."""

    model_config = ConfigDict(extra="allow")

    status: str = "firing"
    alerts: list[AlertmanagerAlert] = Field(default_factory=list)


def _problem(loc: list[Any], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg}


def create_app(
    monitor: Monitor,
    retrainer: Retrainer,
    token: str | None = None,
    refresh_loop: bool = True,
    decider: Decider | None = None,
) -> FastAPI:
    stop = threading.Event()

    def loop() -> None:
        while True:
            monitor.refresh()
            if decider is not None:
                _decide(decider)
            if stop.wait(monitor.cfg.interval_s):
                return

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(target=loop, name="monitor-refresh", daemon=True)
        if refresh_loop:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            retrainer.abort()
            retrainer.wait(30)
            if thread.is_alive():
                thread.join(10)

    app = FastAPI(
        title="Plumbline monitor",
        lifespan=lifespan,
        description="Drift, live performance from delayed labels, retraining trigger.",
    )

    # HTTPBearer only documents the scheme (securitySchemes, per-route security) and reads the
    # header; the check and the RFC 6750 answer are the server's own (plumbline.core.bearer).
    bearer = HTTPBearer(
        scheme_name="monitorToken",
        description="the token in the variable monitor.token_env names",
        auto_error=False,
    )

    def authorized(request: Request, _: object = Depends(bearer)) -> None:
        assert token is not None
        refused = refusal(request.headers.get("authorization", ""), token)
        if refused is not None:
            detail, challenge = refused
            raise HTTPException(401, detail, headers={"WWW-Authenticate": challenge})

    guard: dict[str, Any] = (
        {
            "dependencies": [Depends(authorized)],
            "responses": {401: {"description": "missing or wrong bearer token"}},
        }
        if token
        else {}
    )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        payload, content_type = render(monitor, *([decider] if decider else []))
        return Response(payload, media_type=content_type)

    @app.get("/rollout")
    def rollout() -> dict[str, Any]:
        """The rollout verdict (per-arm figures, intervals) and the last decision."""
        report = decider.report if decider else None
        last = decider.last if decider else None
        return {
            "report": report.to_dict() if report else None,
            "decision": last.to_dict() if last else None,
        }

    def status() -> dict[str, Any]:
        return {
            **monitor.snapshot.to_dict(),
            "counters": dict(monitor.counter_values()),
            "retrains": [asdict(r) for r in monitor.store.retrains(limit=10)],
        }

    app.get("/status")(status)

    @app.post("/refresh", **guard)
    def refresh() -> dict[str, Any]:
        monitor.refresh()
        return status()

    @app.post("/feedback", **guard)
    async def feedback(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError as err:
            monitor.count("feedback.invalid")
            return JSONResponse({"detail": [_problem(["body"], f"not JSON: {err}")]}, 422)
        items = body.get("outcomes") if isinstance(body, dict) and "outcomes" in body else body
        single = isinstance(items, dict)
        raw = [items] if single else items
        if not isinstance(raw, list) or not raw or len(raw) > MAX_FEEDBACK_ITEMS:
            monitor.count("feedback.invalid")
            return JSONResponse(
                {
                    "detail": [
                        _problem(
                            ["body"],
                            f"expected an outcome object or a list of 1 to {MAX_FEEDBACK_ITEMS}",
                        )
                    ]
                },
                422,
            )
        outcomes: list[Outcome] = []
        problems: list[dict[str, Any]] = []
        for i, entry in enumerate(raw):
            loc: list[Any] = ["body"] if single else ["body", i]
            try:
                item = FeedbackItem.model_validate(entry)
                outcomes.append(
                    Outcome(item.request_id, item.row, monitor.outcome_value(item.outcome))
                )
            except ValidationError as err:
                problems += [_problem([*loc, *e["loc"]], e["msg"]) for e in err.errors()]
            except ValueError as err:
                problems.append(_problem([*loc, "outcome"], str(err)))
        if problems:
            monitor.count("feedback.invalid")
            return JSONResponse({"detail": problems[:50], "errors_total": len(problems)}, 422)
        result = await asyncio.to_thread(monitor.feedback, outcomes)
        return JSONResponse(result.to_dict())

    def start(trigger: str, force: bool) -> dict[str, Any]:
        decision, _ = retrainer.request(trigger, force=force)
        monitor.count(f"trigger.{decision.outcome}")
        log.info("retrain request (%s): %s: %s", trigger, decision.outcome, decision.reason)
        return asdict(decision)

    @app.post("/alerts", **guard)
    def alerts(payload: AlertmanagerWebhook) -> dict[str, Any]:
        wanted = set(monitor.params.retrain.trigger_alerts)
        firing = sorted(
            {a.labels.get("alertname", "") for a in payload.alerts if a.status == "firing"}
        )
        for name in firing:
            monitor.count(f"alert.{name}")
        triggers = [name for name in firing if name in wanted]
        if not triggers:
            return {
                "outcome": "ignored",
                "reason": "no firing alert in retrain.trigger_alerts",
                "firing": firing,
            }
        return {**start(f"alert {', '.join(triggers)}", force=False), "firing": firing}

    @app.post("/retrain", **guard)
    def retrain(force: bool = False) -> dict[str, Any]:
        return start("manual (POST /retrain)", force=force)

    @app.post("/report", **guard)
    def report() -> dict[str, Any]:
        from plumbline.monitoring import livereport

        done = livereport.write(monitor)
        return {"path": str(done.path), "serving_version": done.snapshot.serving_version}

    return app


def _decide(decider: Decider) -> None:
    try:
        decider.step()
    except Exception:
        log.exception("rollout decision failed")


def build(params: Params, contract: Contract, root: Path) -> tuple[Monitor, Retrainer]:
    monitor = Monitor(params, contract, root)
    retrainer = Retrainer(
        params, contract, root, monitor.store, monitor.references, monitor.state_dir
    )
    return monitor, retrainer


def serve(params: Params, contract: Contract, root: Path, host: str, port: int) -> None:
    import uvicorn

    # The monitor exports with its own collector; a multiprocess directory meant for the
    # server must not leak into it (or into the retrain subprocesses).
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    monitor, retrainer = build(params, contract, root)
    token = os.environ.get(params.monitor.token_env) or None
    from plumbline.monitoring.rollout import decide

    decider = decide.build(params, monitor.store, monitor.state_dir, root)
    app = create_app(monitor, retrainer, token, decider=decider)
    log.info("monitor on %s:%d: log %s, state %s", host, port, monitor.log_dir, monitor.state_dir)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
