"""``plumbline monitor``: the monitoring service (FastAPI on uvicorn, default port 8001).

Routes:

* ``POST /feedback``: true outcomes by request id (+ row, default 0), one object, a list, or
  ``{"outcomes": [...]}``. The answer counts matched, pending (no logged prediction with that
  id yet, as its log file is not finished: kept, and matched once the file is read) and
  duplicate outcomes (the first one is kept) and lists their ids; the same counts go to
  Prometheus.
* ``POST /alerts``: the Alertmanager webhook. A firing alert named in
  ``retrain.trigger_alerts`` starts a retrain (:mod:`plumbline.monitoring.retrain`) unless one
  is running, the cooldown lasts or there are too few new labels; the answer says which.
* ``POST /retrain`` (``?force=true`` skips cooldown and new-label checks), ``POST /refresh``,
  ``POST /report`` (writes the drift + live report), ``GET /status`` (JSON, with the candidates
  waiting for approval), ``GET /metrics`` (Prometheus), ``GET /health``.
* ``GET /approvals``: the candidates waiting for approval, with their evidence;
  ``POST /approvals/{version}/approve`` and ``.../reject`` with ``{"comment": "..."}``
  (:mod:`plumbline.promotion.approvals`).
* ``GET /audit?last=N``: the newest records of the audit trail, oldest first;
  ``GET /audit/verify``: the check of the whole hash chain.

Every POST needs the role ``operator``, except approving and rejecting, which need
``approver``; reading approvals and the audit trail needs ``viewer``. An identity is a personal
token (``plumbline users``), an authenticating proxy's headers from ``auth.proxy``'s trusted
addresses, or (deprecated, while ``auth.legacy_tokens`` is on) the token in the variable
``monitor.token_env`` names, which acts as an operator named ``legacy-monitor-token``.
Without credentials a guarded route answers 401 with ``WWW-Authenticate``; with too low a
role 403, recorded in the audit trail as ``refused``. The probes and read-only figures
(``/health``, ``/metrics``, ``/status``, ``/rollout``) stay open.
A background thread refreshes drift and live metrics every ``monitor.interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plumbline.core.bearer import challenge
from plumbline.core.contract import Contract
from plumbline.core.docs_assets import serve_docs_offline
from plumbline.governance.identity import (
    Actor,
    Authenticator,
    Forbidden,
    Unauthenticated,
    Users,
)
from plumbline.governance.settings import ApprovalsConfig, Role
from plumbline.governance.trail import AuditTrail
from plumbline.monitoring.monitor import Monitor, render
from plumbline.monitoring.retrain import Retrainer
from plumbline.monitoring.rollout.decide import Decider
from plumbline.monitoring.settings import Params
from plumbline.monitoring.store import Outcome

log = logging.getLogger("plumbline.monitor")

MAX_FEEDBACK_ITEMS = 100_000
MAX_AUDIT_RECORDS = 10_000  # GET /audit?last=N at most
LEGACY_NAME = "legacy-monitor-token"


@dataclass
class Governance:
    """Who may call the monitor's guarded routes, and where their acts are recorded.

    ``registry`` makes the model's registry (MLflow) for the approval routes, per request."""

    auth: Authenticator
    trail: AuditTrail
    approvals: ApprovalsConfig
    registry: Callable[[], Any] | None = None


def governance_for(params: Params, root: Path, env: Mapping[str, str] | None = None) -> Governance:
    """The monitor's governance from ``params.auth`` and ``params.audit``; the deprecated
    ``monitor.token_env`` token acts as an operator while ``auth.legacy_tokens`` is on."""
    env = os.environ if env is None else env
    trail = AuditTrail.for_project(params.audit, root)
    legacy: dict[str, tuple[str, Role]] = {}
    token = env.get(params.monitor.token_env)
    if token:
        legacy[token] = (LEGACY_NAME, "operator")

    def registry() -> Any:
        from plumbline.promotion.registry import Registry  # MLflow: only when asked

        return Registry.from_params(params, root, trail)

    return Governance(
        Authenticator(Users(trail.engine), params.auth, legacy),
        trail,
        params.promotion.approvals,
        registry,
    )


class Comment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(
        min_length=1,
        max_length=10_000,
        pattern=r"\S",
        description="What the approver checked, or why the candidate is rejected",
    )


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
    governance: Governance | None = None,
    refresh_loop: bool = True,
    decider: Decider | None = None,
) -> FastAPI:
    """The monitor's app. Without ``governance`` every guarded route answers 401 (nobody can
    be identified); :func:`serve` always gives one."""
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
    serve_docs_offline(app)  # /docs works on a network with no internet access

    # HTTPBearer only documents the scheme (securitySchemes, per-route security) and reads the
    # header; who the caller is comes from the governance Authenticator.
    bearer = HTTPBearer(
        scheme_name="monitorToken",
        description="A personal token (`plumbline users add`), or the deprecated token in the "
        "variable monitor.token_env names (an operator while auth.legacy_tokens is on); an "
        "authenticating proxy's identity headers are accepted from auth.proxy.trusted_proxies",
        auto_error=False,
    )

    def refuse(actor: Actor, needs: Role, request: Request) -> None:
        assert governance is not None
        try:
            governance.trail.refusal(actor, request.url.path, request.method, needs)
        except Exception:
            log.exception("could not record the refusal of %s in the audit trail", actor.name)

    def requires(needs: Role) -> Callable[..., Actor]:
        def admitted(request: Request, _: object = Depends(bearer)) -> Actor:
            if governance is None:
                raise HTTPException(
                    401,
                    "no identity can be checked: the monitor runs without governance",
                    headers={"WWW-Authenticate": challenge()},
                )
            client = request.client.host if request.client else None
            try:
                actor = governance.auth.require(request.headers, client, needs)
            except Unauthenticated as err:
                raise HTTPException(
                    401, str(err), headers={"WWW-Authenticate": err.challenge}
                ) from None
            except Forbidden as err:
                proxied = governance.auth.auth.proxy.user_header
                who = err.actor or Actor(
                    str(request.headers.get(proxied) or "unknown").strip(), "viewer", "proxy"
                )
                refuse(who, needs, request)
                raise HTTPException(403, str(err)) from None
            request.state.actor = actor  # for the route that records who acted
            return actor

        return admitted

    def refusals(needs: Role) -> dict[int | str, dict[str, Any]]:
        return {
            401: {
                "description": "No credentials, a token that is unknown, revoked or expired, "
                "or identity headers from an address not in auth.proxy.trusted_proxies",
                "headers": {
                    "WWW-Authenticate": {
                        "description": 'Bearer realm="plumbline"',
                        "schema": {"type": "string"},
                    }
                },
            },
            403: {
                "description": f"The caller lacks the role {needs} (recorded in the audit "
                "trail as refused)"
            },
        }

    viewer, operator, approver = requires("viewer"), requires("operator"), requires("approver")
    guard: dict[str, Any] = {"responses": refusals("operator")}

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

    def waiting() -> dict[str, Any]:
        """The candidates waiting for approval (automatic retrains' too)."""
        if governance is None:
            return {"required": None, "pending": []}
        cfg = governance.approvals
        out: dict[str, Any] = {"required": cfg.required, "pending": []}
        if cfg.required == 0 or governance.registry is None:
            return out
        from plumbline.promotion import approvals

        try:
            found = approvals.pending(governance.trail, governance.registry(), cfg)
        except Exception as err:
            log.exception("could not read the pending approvals")
            return {**out, "error": f"{type(err).__name__}: {err}"}
        out["pending"] = [p.to_json() for p in found]
        return out

    def status() -> dict[str, Any]:
        return {
            **monitor.snapshot.to_dict(),
            "counters": dict(monitor.counter_values()),
            "retrains": [asdict(r) for r in monitor.store.retrains(limit=10)],
            "approvals": waiting(),
        }

    app.get("/status")(status)

    @app.post("/refresh", dependencies=[Depends(operator)], **guard)
    def refresh() -> dict[str, Any]:
        monitor.refresh()
        return status()

    @app.post("/feedback", dependencies=[Depends(operator)], **guard)
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

    @app.post("/alerts", dependencies=[Depends(operator)], **guard)
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

    @app.post("/retrain", dependencies=[Depends(operator)], **guard)
    def retrain(request: Request, force: bool = False) -> dict[str, Any]:
        actor: Actor = request.state.actor
        return start(f"manual (POST /retrain by {actor.name})", force=force)

    @app.post("/report", dependencies=[Depends(operator)], **guard)
    def report() -> dict[str, Any]:
        from plumbline.monitoring import livereport

        done = livereport.write(monitor)
        return {"path": str(done.path), "serving_version": done.snapshot.serving_version}

    def governed() -> Governance:
        if governance is None or governance.registry is None:
            raise HTTPException(503, "approvals need the model registry (run `plumbline monitor`)")
        return governance

    @app.get("/approvals", dependencies=[Depends(viewer)], responses=refusals("viewer"))
    def approvals_list() -> dict[str, Any]:
        """The candidates waiting for approval, oldest first, with their evidence."""
        governed()
        return waiting()

    def decide(action: str, version: str, actor: Actor, comment: str) -> JSONResponse:
        from plumbline.promotion import approvals

        gov = governed()
        make = gov.registry
        assert make is not None  # governed() checked it
        step = approvals.approve if action == "approve" else approvals.reject
        try:
            decision = step(gov.trail, make(), version, actor, comment, gov.approvals)
        except approvals.NotPending as err:
            return JSONResponse({"detail": str(err)}, 404)
        except Forbidden as err:  # separation of duties: recorded as refused by approvals
            return JSONResponse({"detail": str(err)}, 403)
        except approvals.ApprovalError as err:
            return JSONResponse({"detail": str(err)}, 409)
        return JSONResponse(decision.to_json())

    decided = {
        **refusals("approver"),
        404: {"description": "The version has no open approval request"},
        409: {"description": "Not recorded: e.g. this approver already approved it"},
    }

    @app.post("/approvals/{version}/approve", dependencies=[Depends(approver)], responses=decided)
    def approve(version: str, body: Comment, request: Request) -> JSONResponse:
        """Approve a pending candidate; the last required approval moves the champion
        (unless it moved since the gate ran: then the answer asks for a new gate run)."""
        return decide("approve", version, request.state.actor, body.comment)

    @app.post("/approvals/{version}/reject", dependencies=[Depends(approver)], responses=decided)
    def reject(version: str, body: Comment, request: Request) -> JSONResponse:
        """Reject a pending candidate: it stays registered and loses the challenger alias."""
        return decide("reject", version, request.state.actor, body.comment)

    @app.get("/audit", dependencies=[Depends(viewer)], responses=refusals("viewer"))
    def audit(
        last: int = Query(50, ge=1, le=MAX_AUDIT_RECORDS, description="How many records"),
    ) -> dict[str, Any]:
        """The newest records of the audit trail, oldest first."""
        if governance is None:
            raise HTTPException(503, "no audit trail")
        return {"records": [r.to_json() for r in governance.trail.last(last)]}

    @app.get("/audit/verify", dependencies=[Depends(viewer)], responses=refusals("viewer"))
    def audit_verify() -> dict[str, Any]:
        """Check the whole hash chain: ok, how many records, the first bad one and why."""
        if governance is None:
            raise HTTPException(503, "no audit trail")
        result = governance.trail.verify()
        return asdict(result)

    if governance is not None and monitor.params.monitor.console.enabled:
        _install_console(app, monitor, governance, rollout)
    return app


def _install_console(
    app: FastAPI, monitor: Monitor, governance: Governance, rollout: Callable[[], Any]
) -> None:
    """The console page (docs/console.md) on the monitor's app."""
    from plumbline.monitoring.console.app import Console, install
    from plumbline.monitoring.console.session import Sessions
    from plumbline.monitoring.console.view import Sources, Verifier, VersionCache
    from plumbline.monitoring.rollout.decide import ServerControl, server_url
    from plumbline.monitoring.workspace import SNAPSHOT_DIR

    params = monitor.params
    token = os.environ.get(params.serve.admin_token_env) or None
    control = ServerControl(server_url(params), token, timeout_s=5.0)
    sources = Sources(
        params=params,
        trail=governance.trail,
        registry=governance.registry,
        snapshot=lambda: monitor.snapshot,
        rollout_report=rollout,
        server_rollout=control.status,
        repos=[monitor.root, monitor.state_dir / SNAPSHOT_DIR],
    )
    config = params.monitor.console
    install(
        app,
        Console(
            sessions=Sessions(governance.auth),
            sources=sources,
            approvals=governance.approvals,
            server_url=server_url(params),
            cache=VersionCache(),
            verifier=Verifier(governance.trail, config.verify_interval_s),
        ),
    )


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
    from plumbline.monitoring.rollout import decide

    decider = decide.build(params, monitor.store, monitor.state_dir, root)
    app = create_app(monitor, retrainer, governance_for(params, root), decider=decider)
    log.info("monitor on %s:%d: log %s, state %s", host, port, monitor.log_dir, monitor.state_dir)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
