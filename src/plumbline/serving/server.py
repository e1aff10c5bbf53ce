"""The LitServe server: HTTP routes, lean queues, probes, metrics and a clean shutdown.

Process layout (LitServe's): the main process supervises; ``serve.api_servers`` forked HTTP
processes (uvicorn) validate requests and answer them; ``serve.inference_workers`` spawned
workers hold the model and score batches (:mod:`plumbline.serving.api`). On top of
``litserve.LitServer`` this class

* routes ``POST /predict`` through its own handler: the body is validated against the
  contract in the HTTP process (422 naming the field; 413 for an oversized body before it is
  read), then queued for the workers; a request never waits longer than
  ``serve.request_timeout_s`` (504);
* replaces LitServe's Manager-proxied queues with ZeroMQ sockets
  (:mod:`plumbline.serving.transport`);
* adds ``GET /ready``, ``GET /metrics`` and ``POST /admin/reload``; LitServe's ``GET /health``
  stays the liveness probe (200 while the processes are up);
* guards the admin routes with the governance roles (:class:`AdminAccess`: a personal token,
  an authenticating proxy, or the deprecated ``serve.admin_token_env`` token): ``/admin/reload``
  needs ``operator``, ``GET /admin/rollout`` ``viewer``, ``POST /admin/rollout`` ``operator``;
  refusals for a too-low role and every reload or rollout switch go to the audit trail;
* optionally requires a bearer token on ``/predict`` (``serve.predict_auth``);
* replaces a scoring worker or HTTP process that dies (:mod:`plumbline.serving.supervisor`):
  requests queued on a dead worker get 503 with ``Retry-After``, the others are routed to the
  workers that are ready;
* turns SIGTERM into LitServe's orderly shutdown: the HTTP processes stop accepting and finish
  their in-flight requests while the workers still score, then the workers flush their
  prediction logs and exit, then the manager. LitServe 0.2.19 alone dies on SIGTERM and leaves
  its children running.

Every LitServe internal used here goes through :mod:`plumbline.serving.compat`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import itertools
import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import litserve as ls
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plumbline.core.bearer import refusal
from plumbline.core.docs_assets import serve_docs_offline
from plumbline.serving import compat
from plumbline.serving.api import PredictAPI, ServeSettings
from plumbline.serving.explaining import parse_k
from plumbline.serving.metrics import ServeMetrics, mark_process_dead, render
from plumbline.serving.reload import RELOAD_REQUEST, worker_key
from plumbline.serving.rollout.admin import RolloutAdmin
from plumbline.serving.rollout.admin import document as document_rollout
from plumbline.serving.rollout.router import sticky_header
from plumbline.serving.schema import (
    ErrorBody,
    Prediction,
    ReadyBody,
    RequestInvalid,
    RequestValidator,
)
from plumbline.serving.supervisor import SUPERVISOR_KEY, Supervisor, SupervisorHooks
from plumbline.serving.transport import Overloaded, ZmqRequestQueue, ZmqResponseTransport

if TYPE_CHECKING:
    from plumbline.governance.identity import Actor, Authenticator
    from plumbline.governance.settings import Role
    from plumbline.governance.trail import AuditTrail

log = logging.getLogger("plumbline.serving")

ROUTES = (
    "/predict",
    "/ready",
    "/health",
    "/metrics",
    "/admin/reload",
    "/admin/rollout",
    "/docs",
    "/openapi.json",
    "/info",
    "/",
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_JSON = "application/json"
_TEXT = "text/plain"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
RETRY_AFTER_S = 1  # what a 503 of /predict tells the client to wait
_ROUTE_POLL_S = 0.1  # how often an HTTP process reads which workers are ready

_metrics: ServeMetrics | None = None


def process_metrics(enabled: bool) -> ServeMetrics:
    """This process's metrics (one set per process; forked children reuse the parent's)."""
    global _metrics
    if _metrics is None:
        _metrics = ServeMetrics(enabled, role="http")
    return _metrics


_UNTYPED_ROUTES = ("/", "/health")  # LitServe answers them without a Content-Type


async def _counted(app: ASGIApp, scope: Scope, receive: Receive, send: Send, route: str) -> None:
    """Run ``app`` on the request; count it by route, method and status and observe its
    latency (a request that ends without an answer counts as a 500)."""
    started = time.perf_counter()
    status = 500

    async def send_status(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, send_status)
    finally:
        process_metrics(True).http(route, scope["method"], status, time.perf_counter() - started)


class MetricsMiddleware:
    """Counts every HTTP request by route and status and observes its latency; gives the
    plain-text answers of LitServe's own routes the media type the OpenAPI document names."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in _UNTYPED_ROUTES:
            send = _with_text_type(send)
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        await _counted(self.app, scope, receive, send, path if path in ROUTES else "other")


class PredictFastPath:
    """``POST /predict`` straight to its handler, below Starlette's middleware chain and router.

    Under load that chain (server errors, FastAPI's exception telemetry and body limit,
    exceptions, the exit stack, the router, the request/response wrappers) cost the HTTP
    processes more CPU than validating the record; every other request still goes through it.
    The handler is the one the router would call (the route stays in the app, for in-process
    clients and the OpenAPI document), and it is counted in the same HTTP metrics.
    """

    def __init__(self, app: ASGIApp, handler: Any, metrics: bool) -> None:
        self.app = app
        self.handler = handler
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app  # what Request.app reads (the response queue id)
        if self.metrics:
            await _counted(self._answer, scope, receive, send, "/predict")
        else:
            await self._answer(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.handler(Request(scope, receive))
        except Exception:
            log.exception("POST /predict failed")
            response = JSONResponse({"detail": "internal server error"}, status_code=500)
        await response(scope, receive, send)


def _with_text_type(send: Send) -> Send:
    async def typed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"content-type" for name, _ in headers):
                headers.append((b"content-type", b"text/plain; charset=utf-8"))
                message = {**message, "headers": headers}
        await send(message)

    return typed


class _Waiter:
    """What LitServe's response reader ``set()``s when a response arrives."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def is_set(self) -> bool:
        return self.future.done()


class WorkerLost(Exception):
    """The scoring worker that held a request died before answering it."""


class _Routing:
    """Which workers an HTTP process sends to, and its requests in flight (per process)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.ready: list[int] = []
        self.generation: list[int] = []
        self.reason: str | None = None
        self.inflight: dict[str, tuple[int, int, asyncio.Future[None]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.turn = itertools.count()


class AdminAccess:
    """Who calls an admin route, checked against the role the route needs.

    The authenticator and the audit trail are built on first use in each HTTP process, from
    ``params.auth`` and ``params.audit`` (LitServe forks those processes; a database
    connection must not cross a fork). The deprecated ``serve.admin_token_env`` token counts
    as an ``operator`` named ``legacy-admin-token`` while ``auth.legacy_tokens`` is on.
    """

    LEGACY_NAME = "legacy-admin-token"

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._built: tuple[Authenticator, AuditTrail] | None = None
        self._lock = threading.Lock()

    def governance(self) -> tuple[Authenticator, AuditTrail]:
        with self._lock:
            if self._built is None or self._pid != os.getpid():
                self._built = self._build()
                self._pid = os.getpid()
            return self._built

    def _build(self) -> tuple[Authenticator, AuditTrail]:
        from plumbline.governance.identity import Authenticator, Users
        from plumbline.governance.trail import AuditTrail

        params = self.settings.params
        trail = AuditTrail.for_project(params.audit, self.settings.root)
        legacy: dict[str, tuple[str, Role]] = {}
        token = os.environ.get(params.serve.admin_token_env)
        if params.auth.legacy_tokens and token:
            legacy[token] = (self.LEGACY_NAME, "operator")
        return Authenticator(Users(trail.engine), params.auth, legacy), trail

    def check(
        self, headers: Any, client_host: str | None, route: str, method: str, needs: Role
    ) -> Actor | Response:
        """The caller when it holds ``needs``; else the 401 (no or a bad credential) or the
        403 (too low a role, recorded in the audit trail as ``refused``)."""
        from plumbline.governance.identity import Forbidden, Unauthenticated

        auth, trail = self.governance()
        try:
            return auth.require(headers, client_host, needs)
        except Unauthenticated as err:
            return JSONResponse(
                {"detail": str(err)},
                status_code=401,
                headers={"WWW-Authenticate": err.challenge},
            )
        except Forbidden as err:
            self._append(
                trail,
                "refused",
                err.actor or _unmapped(auth, headers),
                {"route": route, "method": method},
                {"needs": needs, "role": err.actor.role if err.actor else None},
            )
            return JSONResponse({"detail": str(err)}, status_code=403)

    async def admit(self, request: Request, needs: Role) -> Actor | Response:
        client = request.client.host if request.client else None
        return await asyncio.to_thread(
            self.check, request.headers, client, request.url.path, request.method, needs
        )

    def record(
        self,
        action: str,
        actor: Actor,
        subject: dict[str, Any],
        evidence: dict[str, Any] | None = None,
    ) -> None:
        self._append(self.governance()[1], action, actor, subject, evidence or {})

    async def arecord(
        self,
        action: str,
        actor: Actor,
        subject: dict[str, Any],
        evidence: dict[str, Any] | None = None,
    ) -> None:
        await asyncio.to_thread(self.record, action, actor, subject, evidence)

    @staticmethod
    def _append(
        trail: AuditTrail,
        action: str,
        actor: Actor,
        subject: dict[str, Any],
        evidence: dict[str, Any],
    ) -> None:
        # The state change has happened (or the refusal was answered): a trail that cannot
        # be written is logged loudly rather than turned into a failed request.
        try:
            trail.append(action, actor, subject=subject, evidence=evidence)
        except Exception:
            log.exception("could not append %s by %s to the audit trail", action, actor.name)


def _unmapped(auth: Authenticator, headers: Any) -> Actor:
    """The actor of a refusal for a proxied user who has no role at all (recorded with the
    lowest role, and ``evidence.role`` null)."""
    from plumbline.governance.identity import Actor

    name = str(headers.get(auth.auth.proxy.user_header) or "unknown").strip()
    return Actor(name, "viewer", "proxy")


class PlumblineServer(ls.LitServer):
    def __init__(self, settings: ServeSettings) -> None:
        compat.check()  # an untested LitServe fails here, by name, not under load
        serve = settings.serve
        self.settings = settings
        self._predict_token = _predict_token(serve)
        self.access = AdminAccess(settings)
        self._sticky_header = sticky_header(serve.rollout.sticky_key, settings.features)
        self._routing: _Routing | None = None
        self._supervisor_lock = threading.Lock()
        self._stopping = False
        self.validator = RequestValidator(
            settings.contract, settings.features, serve.unknown_category, serve.max_records
        )
        self._uid = itertools.count()
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        self.shared: Any = None
        api = PredictAPI(settings)
        super().__init__(
            api,
            accelerator="cpu",
            devices=1,
            workers_per_device=serve.inference_workers,
            timeout=serve.request_timeout_s,
            middlewares=[(MetricsMiddleware, {"enabled": serve.metrics})],
        )
        compat.drop_gzip(self.app)  # predictions are small and CPU is scarce
        self._register_routes()
        serve_docs_offline(self.app)  # /docs works on a network with no internet access
        self.app.title = "Plumbline prediction API"
        self.app.description = (
            f"Scores records of contract {settings.contract.name!r} with "
            f"models:/{settings.params.mlflow.model_name}@"
            f"{serve.model_alias}."
        )
        self.app.openapi = self._openapi
        self.api = api

    # --- processes and queues ---------------------------------------------------------------

    def _init_manager(self, num_api_servers: int) -> Any:
        manager = super()._init_manager(num_api_servers)
        ipc_dir = self.settings.ipc_dir or tempfile.mkdtemp(prefix="plumbline-ipc-")
        self._ipc_dir = ipc_dir
        self._transport = ZmqResponseTransport(ipc_dir, num_api_servers)
        workers = self.settings.serve.inference_workers
        for path in list(self.litapi_request_queues):
            self.litapi_request_queues[path] = ZmqRequestQueue(ipc_dir, path, workers)
        self.shared = manager.dict()
        self.shared[RELOAD_REQUEST] = 0
        self.api.shared = self.shared
        return manager

    def launch_inference_worker(self, lit_api: Any) -> list[Any]:
        """LitServe's worker launch, but forked instead of spawned.

        A spawned worker re-imports everything this process already has (LitServe, FastAPI,
        pandas, pyarrow, the contract): about a second on the way to ready. Forking here is
        safe: this process has no threads or ZeroMQ sockets yet (sockets are made lazily in
        the process that uses them), and LitServe forks its HTTP processes the same way.
        """
        gc.freeze()  # what exists now lives as long as the processes (and stays shared)
        workers = self.settings.serve.inference_workers
        return [self._start_inference_worker(lit_api, i) for i in range(workers)]

    def _start_inference_worker(self, lit_api: Any, worker_id: int) -> Any:
        self.workers_setup_status[compat.worker_setup_key(lit_api, worker_id)] = (
            compat.setup_status().STARTING
        )
        process = mp.get_context("fork").Process(
            target=compat.inference_worker(),
            args=compat.inference_worker_args(self, lit_api, worker_id),
            name=f"inference-worker-{worker_id}",
        )
        process.start()
        return process

    def _restart_inference_worker(self, worker_id: int) -> Any:
        # A replacement loads the alias's current version itself, not the start-up prefetch.
        api = copy.copy(self.api)
        api.settings = dataclasses.replace(self.settings, prefetch_dir="")
        return self._start_inference_worker(api, worker_id)

    def _start_server(
        self,
        port: int,
        num_uvicorn_servers: int,
        log_level: str,
        sockets: list[Any],
        uvicorn_worker_type: str,
        **kwargs: Any,
    ) -> dict[int, Any]:
        # Everything allocated so far (imports, app, schema) lives as long as the process:
        # keep it out of the garbage collector's full passes, which otherwise stall every
        # in-flight request of an HTTP process for tens of milliseconds.
        gc.collect()
        gc.freeze()
        if uvicorn_worker_type != "process":
            raise ValueError("the server runs its HTTP servers as processes")
        self._http_args = (port, log_level, sockets, kwargs)
        self._http_workers = {i: self._start_http(i) for i in range(num_uvicorn_servers)}
        return self._http_workers

    def _start_http(self, index: int) -> Any:
        """One HTTP process (uvicorn) for response queue ``index``, on the shared socket."""
        port, log_level, sockets, kwargs = self._http_args
        self.app.response_queue_id = index
        app = copy.copy(self.app)
        config = uvicorn.Config(
            app=PredictFastPath(app, self._predict, self.settings.serve.metrics),
            host="0.0.0.0",
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=self.uvicorn_graceful_timeout,
            **kwargs,
        )
        server = compat.uvicorn_server()(config=config)
        process = mp.get_context("fork").Process(
            target=server.run, args=(index, sockets), name=f"LitServer-{index}"
        )
        process.start()
        return process

    def _start_worker_monitoring(self, manager: Any, uvicorn_workers: dict[int, Any]) -> None:
        """Instead of LitServe's monitor (which shuts everything down when a worker dies)."""
        serve = self.settings.serve
        metrics = ServeMetrics(serve.metrics, role="supervisor")
        hooks = SupervisorHooks(
            inference=self.inference_workers,
            http=uvicorn_workers,
            start_inference=self._restart_inference_worker,
            start_http=self._start_http,
            publish=self._publish_supervision,
            worker_lost=self._worker_lost,
            process_dead=mark_process_dead,
            restarted=metrics.worker_restarted,
            stopping=lambda: self._stopping,
            lock=self._supervisor_lock,
            warm=self._warm_imports,
        )
        self._supervisor = Supervisor(
            hooks, serve.restart_backoff_s, serve.restart_backoff_max_s, serve.restart_stable_s
        )
        self._supervisor.start()

    def _warm_imports(self) -> None:
        """Import here what a replacement worker needs to load a model (MLflow, its SQL
        store, scikit-learn, skops): forked from this process it then starts with them
        loaded instead of importing them (seconds of CPU) while capacity is missing. Done
        once the workers are ready (or a minute has passed), so it never competes with the
        server's own start."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._stopping:
            workers = self._worker_states()
            if workers and all(w and w.get("ready") for w in workers):
                break
            time.sleep(0.2)
        from plumbline.serving.source import ModelSource

        ModelSource.configure_environment()
        import mlflow

        import plumbline.model.artifact
        import plumbline.promotion.registry  # noqa: F401

        if self.settings.tracking_uri.startswith("sqlite:"):
            import mlflow.store.model_registry.sqlalchemy_store
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        gc.collect()
        gc.freeze()

    def _publish_supervision(self, state: dict[str, Any]) -> None:
        try:
            self.shared[SUPERVISOR_KEY] = state
        except Exception:
            log.debug("could not publish the supervisor state", exc_info=True)

    def _worker_lost(self, worker_id: int, reason: str) -> None:
        try:
            previous = self.shared.get(worker_key(worker_id)) or {}
            self.shared[worker_key(worker_id)] = {
                **previous,
                "pid": None,
                "ready": False,
                "model": None,
                "error": reason,
            }
        except Exception:
            log.debug("could not publish the worker state", exc_info=True)

    def run(self, host: str = "0.0.0.0", port: int | str = 8000, **kwargs: Any) -> None:
        """Serve until SIGTERM or SIGINT, then shut every process down in order."""
        self._main_pid = os.getpid()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        try:
            super().run(
                host=host,
                port=port,
                num_api_servers=self.settings.serve.api_servers,
                generate_client_file=False,
                **kwargs,
            )
        except KeyboardInterrupt:
            log.info("stopped during start-up")
        finally:
            self._reap_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._main_pid:
            return  # a forked HTTP process re-raising the signal after uvicorn's shutdown
        log.info("received %s: shutting down", signal.Signals(signum).name)
        if self._shutdown_event is None or not hasattr(self, "inference_workers"):
            raise KeyboardInterrupt  # still starting: unwind, run() reaps the children
        # Not from this thread: the main thread may be inside the manager call that waits
        # for this very event, and a manager connection serves one call at a time.
        threading.Thread(target=self._set_shutdown_event, daemon=True).start()

    def _set_shutdown_event(self) -> None:
        try:
            if self._shutdown_event is not None:
                self._shutdown_event.set()
        except Exception:
            log.debug("shutdown event unavailable", exc_info=True)

    def _perform_graceful_shutdown(
        self, manager: Any, uvicorn_workers: Any, shutdown_reason: str = "normal"
    ) -> None:
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
        with self._supervisor_lock:  # no process is started again from here on
            self._stopping = True
        setter = threading.Thread(target=self._set_shutdown_event, daemon=True)
        setter.start()  # stops LitServe's worker monitor from "restarting" the server
        setter.join(2.0)
        super()._perform_graceful_shutdown(manager, uvicorn_workers, shutdown_reason)
        for proc in [*getattr(self, "inference_workers", []), *uvicorn_workers.values()]:
            if isinstance(proc, mp.process.BaseProcess) and proc.pid:
                mark_process_dead(proc.pid)
        log.info("all server processes stopped")

    def _reap_children(self) -> None:
        """Whatever is still running now (a failed start, a stuck child) is ended."""
        children = mp.active_children()
        for proc in children:
            proc.terminate()
        deadline = time.monotonic() + 5
        for proc in children:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("%s (pid %s) did not stop; killing it", proc.name, proc.pid)
                proc.kill()
                proc.join(1)
        ipc_dir = getattr(self, "_ipc_dir", None)
        if ipc_dir and not self.settings.ipc_dir:
            shutil.rmtree(ipc_dir, ignore_errors=True)

    # --- routes -----------------------------------------------------------------------------

    def _register_routes(self) -> None:
        app: FastAPI = self.app
        # LitServe registered its /predict (and fired the server-start callbacks). Ours is a
        # plain Starlette route, first in the table: FastAPI's per-request dependency
        # machinery costs more than validating the record. Its OpenAPI entry is written in
        # _openapi from the same schema objects.
        app.router.routes[:] = [
            r for r in app.router.routes if getattr(r, "path", None) != "/predict"
        ]
        app.router.routes.insert(0, Route("/predict", self._predict, methods=["POST"]))
        app.add_api_route(
            "/ready",
            self._ready,
            methods=["GET"],
            summary="200 once every scoring worker has a model that passed its smoke check",
        )
        app.add_api_route(
            "/metrics",
            self._metrics,
            methods=["GET"],
            summary="Prometheus metrics of all server processes",
        )
        app.add_api_route(
            "/admin/reload",
            self._reload,
            methods=["POST"],
            summary="Load the alias's current version now (role operator)",
        )
        rollout = RolloutAdmin(self.settings, lambda: self.shared, self.access)
        # One route for both methods: a 405 then lists both in its Allow header.
        app.add_api_route("/admin/rollout", rollout.handle, methods=["GET", "POST"])

    def _openapi(self) -> dict[str, Any]:
        app: FastAPI = self.app
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version="1", description=app.description, routes=app.routes
        )
        body, components = self.validator.openapi_request_schema()
        ref = "#/components/schemas/{model}"
        answer = TypeAdapter(Prediction | list[Prediction]).json_schema(ref_template=ref)
        error = ErrorBody.model_json_schema(ref_template=ref)
        components.update(answer.pop("$defs", {}))
        components.update(error.pop("$defs", {}))
        components["ErrorBody"] = error

        ready = ReadyBody.model_json_schema(ref_template=ref)
        components.update(ready.pop("$defs", {}))
        components["ReadyBody"] = ready
        schemas = schema.setdefault("components", {})
        schemas.setdefault("schemas", {}).update(components)
        schemas["securitySchemes"] = {
            "predictToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token in the variable named by serve.predict_token_env",
            },
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "A personal token (`plumbline users add`), or the deprecated "
                "token in the variable named by serve.admin_token_env (an operator while "
                "auth.legacy_tokens is on); an authenticating proxy's identity headers are "
                "accepted from auth.proxy.trusted_proxies (docs/governance.md)",
            },
        }
        error_ref = {"$ref": "#/components/schemas/ErrorBody"}
        retry = {
            "Retry-After": {
                "description": "Seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 0},
            }
        }

        def described(
            text: str,
            body_schema: dict[str, Any] | None = error_ref,
            media: str = _JSON,
            headers: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            out: dict[str, Any] = {"description": text}
            if body_schema is not None:
                out["content"] = {media: {"schema": body_schema}}
            if headers:
                out["headers"] = headers
            return out

        text = {"type": "string"}
        predict_responses = {
            "200": described(
                "Prediction(s)",
                answer,
                headers={
                    "X-Request-ID": {
                        "description": "The request id (the client's, or a new one)",
                        "schema": {"type": "string"},
                    }
                },
            ),
            "413": described(
                f"Body larger than {self.settings.serve.max_body_bytes} bytes (refused before "
                "parsing)"
            ),
            "409": described("Explanations were asked for but the served model gives none"),
            "422": described("Invalid input: each problem with its field and reason"),
            "503": described(
                "No scoring worker is ready, or the one holding the request died; retry",
                headers=retry,
            ),
            "504": described("Not scored within serve.request_timeout_s"),
        }
        predict: dict[str, Any] = {
            "summary": "Score one record or a list of records",
            "description": "One record in, one prediction out; a list in, a list out (same "
            "order). Validated against the data contract.",
            "operationId": "predict",
            "parameters": [
                {
                    "name": "explain",
                    "in": "query",
                    "required": False,
                    "description": "Add each prediction's explanation: the K features of "
                    "largest |contribution| to its log-odds (docs/explanations.md)",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": len(self.settings.features),
                    },
                }
            ],
            "requestBody": {"required": True, "content": {_JSON: {"schema": body}}},
            "responses": predict_responses,
        }
        if self._predict_token is not None:
            predict["security"] = [{"predictToken": []}]
            predict_responses["401"] = described(
                "Missing or wrong bearer token",
                headers={
                    "WWW-Authenticate": {
                        "description": "Bearer",
                        "schema": {"type": "string"},
                    }
                },
            )
        paths = schema.get("paths", {})
        documented = {
            "/": {"200": described("The server runs", text, _TEXT)},
            "/health": {
                "200": described("Liveness: the server's processes are up", text, _TEXT),
                "503": described("A scoring worker is (re)starting", text, _TEXT),
            },
            "/ready": {
                "200": described("Every worker serves a smoke-checked model", ready_ref(ref)),
                "503": described("Not ready, with the reason", ready_ref(ref)),
            },
            "/metrics": {
                "200": described("Prometheus text exposition format", text, _PROMETHEUS),
                "404": described("Metrics are disabled (serve.metrics)"),
            },
        }
        for path, responses in documented.items():
            paths[path]["get"]["responses"] = responses
        reload_op = paths["/admin/reload"]["post"]
        reload_op["security"] = [{"adminToken": []}]
        reload_op["responses"] = {
            "200": described("What each worker serves now", {"type": "object"}),
            **admin_refusals("operator", described),
            "409": described("The version was rejected; the old one keeps serving", {}),
            "504": described("The workers did not report back in time"),
        }
        document_rollout(paths, described, admin_refusals)
        schema["paths"] = {"/predict": {"post": predict}, **paths}
        app.openapi_schema = schema
        return schema

    async def _predict(self, request: Request) -> Response:
        serve = self.settings.serve
        if self._predict_token is not None:
            refused = _check_bearer(request, self._predict_token)
            if refused is not None:
                return refused
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > serve.max_body_bytes:
            return _too_large(serve.max_body_bytes)
        body = await _read_body(request, serve.max_body_bytes)
        if body is None:
            return _too_large(serve.max_body_bytes)
        try:
            explain = parse_k(request.query_params.get("explain"), len(self.settings.features))
        except ValueError as why:
            invalid = RequestInvalid(
                [
                    {
                        "field": "explain",
                        "loc": ["query", "explain"],
                        "msg": str(why),
                        "type": "value_error",
                    }
                ],
                1,
            )
            process_metrics(serve.metrics).validation_failed(invalid.fields)
            return Response(orjson.dumps(invalid.body()), status_code=422, media_type=_JSON)
        try:
            rows, single = self.validator.parse(body)
        except RequestInvalid as err:
            process_metrics(serve.metrics).validation_failed(err.fields)
            return Response(orjson.dumps(err.body()), status_code=422, media_type=_JSON)
        routing = await self._route()
        if not routing.ready:
            return _unavailable(f"no scoring worker is ready: {routing.reason or 'starting'}")
        worker = routing.ready[next(routing.turn) % len(routing.ready)]
        header_id = request.headers.get("x-request-id")
        request_id = header_id if header_id and _REQUEST_ID.match(header_id) else uuid.uuid4().hex
        uid = f"{os.getpid()}-{next(self._uid)}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.response_buffer[uid] = compat.response_buffer_item(_Waiter(future))
        queue = self.litapi_request_queues["/predict"]
        payload: tuple[Any, ...] = (request_id, time.time(), rows, single, explain)
        if self._sticky_header is not None:  # the rollout's sticky key is this header
            payload += (request.headers.get(self._sticky_header),)
        try:
            queue.put(
                (request.app.response_queue_id, uid, time.monotonic(), payload),
                worker=worker,
            )
        except Overloaded:
            self.response_buffer.pop(uid, None)
            return _unavailable("overloaded; retry later")
        routing.inflight[uid] = (worker, routing.generation[worker], future)
        timer = loop.call_later(serve.request_timeout_s, _expire, future)
        try:
            await future
        except TimeoutError:
            self.response_buffer.pop(uid, None)
            return JSONResponse({"detail": "not scored in time"}, status_code=504)
        except WorkerLost as err:
            self.response_buffer.pop(uid, None)
            return _unavailable(str(err))
        finally:
            timer.cancel()
            routing.inflight.pop(uid, None)
        status, payload = compat.response_payload(self.response_buffer.pop(uid))
        headers = {"x-request-id": request_id}
        if status == 503:
            headers["retry-after"] = str(RETRY_AFTER_S)
        return Response(payload, status_code=status, media_type=_JSON, headers=headers)

    async def _route(self) -> _Routing:
        """This process's routing state; started (and first read) on the first request."""
        routing = self._routing
        if routing is None or routing.pid != os.getpid():
            # Read fully before publishing: concurrent first requests must not see it empty.
            fresh = _Routing()
            self._apply_state(fresh, await asyncio.to_thread(self._shared_copy))
            routing = self._routing
            if routing is None or routing.pid != os.getpid():
                routing = self._routing = fresh
        if routing.task is None or routing.task.done():
            routing.task = asyncio.get_running_loop().create_task(self._watch(routing))
        return routing

    async def _watch(self, routing: _Routing) -> None:
        while True:
            await asyncio.sleep(_ROUTE_POLL_S)
            state = await asyncio.to_thread(self._shared_copy)
            if state is not None:
                self._apply_state(routing, state)

    def _shared_copy(self) -> dict[str, Any] | None:
        try:
            return dict(self.shared.copy())
        except Exception:  # the manager is gone: shutting down; keep the last state
            return None

    def _apply_state(self, routing: _Routing, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        workers = self.settings.serve.inference_workers
        sup = state.get(SUPERVISOR_KEY) or {}
        generation = list(sup.get("generation") or [0] * workers)
        alive = list(sup.get("alive") or [True] * workers)
        reasons = list(sup.get("reason") or [None] * workers)
        ready: list[int] = []
        reason: str | None = None
        for i in range(workers):
            worker = state.get(worker_key(i)) or {}
            if alive[i] and worker.get("ready"):
                ready.append(i)
            elif reason is None:
                reason = (reasons[i] if not alive[i] else None) or worker.get("error")
        routing.ready, routing.generation, routing.reason = ready, generation, reason
        for worker_id, gen, future in list(routing.inflight.values()):
            if gen != generation[worker_id] and not future.done():
                lost = reasons[worker_id] or f"scoring worker {worker_id} died"
                future.set_exception(WorkerLost(f"{lost}; the request was not scored, retry"))

    async def _ready(self) -> Response:
        state = await asyncio.to_thread(self._shared_copy) or {}
        workers = [state.get(worker_key(i)) for i in range(self.settings.serve.inference_workers)]
        sup = state.get(SUPERVISOR_KEY) or {}
        ready = bool(workers) and all(w is not None and w.get("ready") for w in workers)
        models = [w.get("model") for w in workers if w and w.get("model")]
        errors = [w.get("error") for w in workers if w and w.get("error")]
        http_down = [
            r
            for up, r in zip(
                sup.get("http_alive") or [], sup.get("http_reason") or [], strict=False
            )
            if not up
        ]
        body: dict[str, Any] = {
            "ready": ready and not http_down,
            "model": models[0] if models else None,
            "workers": len(workers),
            "workers_ready": sum(1 for w in workers if w and w.get("ready")),
        }
        if errors or http_down:
            body["error"] = (errors or http_down)[0]
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def _metrics(self) -> Response:
        if not self.settings.serve.metrics:
            return JSONResponse({"detail": "metrics are disabled (serve.metrics)"}, status_code=404)
        process_metrics(True).flush()  # this process's counts up to now
        payload, content_type = await asyncio.to_thread(render)
        return Response(payload, media_type=content_type)

    async def _reload(self, request: Request) -> Response:
        actor = await self.access.admit(request, "operator")
        if isinstance(actor, Response):
            return actor
        ticket = time.time_ns()
        await asyncio.to_thread(self.shared.__setitem__, RELOAD_REQUEST, ticket)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = await asyncio.to_thread(self._worker_states)
            if workers and all(w and int(w.get("handled_reload", 0)) >= ticket for w in workers):
                results = [w["last_reload"] for w in workers if w]
                rejected = [r for r in results if r.get("status") in ("rejected", "unavailable")]
                status = rejected[0]["status"] if rejected else results[0].get("status")
                await self.access.arecord(
                    "reload",
                    actor,
                    {
                        "model": self.settings.params.mlflow.model_name,
                        "alias": self.settings.serve.model_alias,
                        "version": _served_version(workers),
                    },
                    {"status": status, "workers": results},
                )
                return JSONResponse(
                    {"status": status, "workers": results},
                    status_code=409 if rejected else 200,
                )
            await asyncio.sleep(0.05)
        return JSONResponse({"detail": "workers did not report back in time"}, status_code=504)

    def _worker_states(self) -> list[dict[str, Any] | None]:
        try:
            state = self.shared.copy()
        except Exception:
            return []
        return [state.get(worker_key(i)) for i in range(self.settings.serve.inference_workers)]


def _served_version(workers: list[dict[str, Any] | None]) -> str | None:
    """The model version the first ready worker serves."""
    model = next((w.get("model") for w in workers if w and w.get("model")), None)
    version = model.get("model_version") if isinstance(model, dict) else None
    return None if version is None else str(version)


def admin_refusals(needs: str, described: Any) -> dict[str, Any]:
    """The OpenAPI entries of an admin route's 401 and 403."""
    return {
        "401": described(
            "No credentials, a token that is unknown, revoked or expired, or identity "
            "headers from an address not in auth.proxy.trusted_proxies",
            headers={
                "WWW-Authenticate": {
                    "description": 'Bearer realm="plumbline" (error="invalid_token" when a '
                    "token was sent)",
                    "schema": {"type": "string"},
                }
            },
        ),
        "403": described(
            f"The caller lacks the role {needs} (recorded in the audit trail as refused), or "
            "a user named by the authenticating proxy has no role in auth.proxy.roles"
        ),
    }


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def _read_body(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Response:
    return JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)


def _unavailable(detail: str) -> Response:
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"retry-after": str(RETRY_AFTER_S)}
    )


def ready_ref(ref: str) -> dict[str, Any]:
    return {"$ref": ref.format(model="ReadyBody")}


def _predict_token(serve: Any) -> str | None:
    """The bearer token of /predict, or None when auth is off; missing when on: an error."""
    if not serve.predict_auth:
        return None
    token = os.environ.get(serve.predict_token_env)
    if not token:
        from plumbline.core.settings import ConfigError

        raise ConfigError(
            f"serve.predict_auth is on but {serve.predict_token_env} is not set "
            "(or empty): refusing to serve /predict without its token"
        )
    return token


def _check_bearer(request: Request, token: str) -> Response | None:
    """None when the request carries ``Authorization: Bearer <token>``, else the 401."""
    refused = refusal(request.headers.get("authorization", ""), token)
    if refused is None:
        return None
    detail, answer = refused
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": answer})


# --- building the server ------------------------------------------------------------------


def build_settings(
    params_path: Path | None = None, ipc_dir: str = "", prefetch_dir: str = ""
) -> ServeSettings:
    from plumbline.core.contract import load_contract
    from plumbline.core.paths import project_root
    from plumbline.core.tracking import tracking_uri
    from plumbline.serving.settings import load_serving_params

    root = project_root()
    params = load_serving_params(params_path or root / "params.yaml")
    contract = load_contract(params.resolve(params.data.contract))
    features = contract.feature_columns(params.featurize.exclude_columns)
    log_dir = params.serve.prediction_log.dir
    return ServeSettings(
        params=params,
        contract=contract,
        features=features,
        root=root,
        tracking_uri=tracking_uri(params.mlflow, root),
        prediction_log_dir=log_dir if log_dir.is_absolute() else params.resolve(log_dir),
        ipc_dir=ipc_dir,
        prefetch_dir=prefetch_dir,
    )
