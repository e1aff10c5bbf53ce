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
* turns SIGTERM into LitServe's orderly shutdown: the HTTP processes stop accepting and finish
  their in-flight requests while the workers still score, then the workers flush their
  prediction logs and exit, then the manager. LitServe 0.2.19 alone dies on SIGTERM and leaves
  its children running.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
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
from typing import Any

import litserve as ls
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from litserve.loops import inference_worker
from litserve.utils import ResponseBufferItem, WorkerSetupStatus
from pydantic import TypeAdapter
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plumbline.serving.api import PredictAPI, ServeSettings
from plumbline.serving.metrics import ServeMetrics, mark_process_dead, render
from plumbline.serving.reload import RELOAD_REQUEST, worker_key
from plumbline.serving.schema import ErrorBody, Prediction, RequestInvalid, RequestValidator
from plumbline.serving.transport import Overloaded, ZmqRequestQueue, ZmqResponseTransport

log = logging.getLogger("plumbline.serving")

ROUTES = (
    "/predict",
    "/ready",
    "/health",
    "/metrics",
    "/admin/reload",
    "/docs",
    "/openapi.json",
    "/info",
    "/",
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_JSON = "application/json"

_metrics: ServeMetrics | None = None


def process_metrics(enabled: bool) -> ServeMetrics:
    """This process's metrics (one set per process; forked children reuse the parent's)."""
    global _metrics
    if _metrics is None:
        _metrics = ServeMetrics(enabled, role="http")
    return _metrics


class MetricsMiddleware:
    """Counts every HTTP request by route and status and observes its latency."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"]
            process_metrics(True).http(
                path if path in ROUTES else "other",
                scope["method"],
                status,
                time.perf_counter() - started,
            )


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


class PlumblineServer(ls.LitServer):
    def __init__(self, settings: ServeSettings) -> None:
        serve = settings.serve
        self.settings = settings
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
        # LitServe adds gzip for every response; predictions are small and CPU is scarce.
        self.app.user_middleware = [
            m
            for m in self.app.user_middleware
            if getattr(m.cls, "__name__", "") != "GZipMiddleware"
        ]
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
        context = mp.get_context("fork")
        endpoint = lit_api.api_path.split("/")[-1]
        workers = []
        for worker_id, device in enumerate(
            self._inference_workers_config_for_api(lit_api.api_path)
        ):
            self.workers_setup_status[f"{endpoint}_{worker_id}"] = WorkerSetupStatus.STARTING
            process = context.Process(
                target=inference_worker,
                args=(
                    lit_api,
                    device[0] if len(device) == 1 else device,
                    worker_id,
                    self._get_request_queue(lit_api.api_path),
                    self._transport,
                    self.workers_setup_status,
                    self._callback_runner,
                    self.restart_workers,
                ),
                name="inference-worker",
            )
            process.start()
            workers.append(process)
        return workers

    def _start_server(self, *args: Any, **kwargs: Any) -> Any:
        # Everything allocated so far (imports, app, schema) lives as long as the process:
        # keep it out of the garbage collector's full passes, which otherwise stall every
        # in-flight request of an HTTP process for tens of milliseconds.
        gc.collect()
        gc.freeze()
        return super()._start_server(*args, **kwargs)

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

    def _register_api_endpoints(self, lit_api: Any, request_type: Any, response_type: Any) -> None:
        app: FastAPI = self.app
        # A plain Starlette route, first in the table: FastAPI's per-request dependency
        # machinery costs more than validating the record. Its OpenAPI entry is added in
        # _openapi from the same schema objects.
        app.router.routes.insert(0, Route("/predict", self._predict, methods=["POST"]))
        app.add_api_route(
            "/ready",
            self._ready,
            methods=["GET"],
            summary="200 once a model is loaded and passed its smoke check",
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
            summary="Load the alias's current version now (bearer token)",
        )

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
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)

        def described(text: str, body_schema: dict[str, Any] | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"description": text}
            if body_schema is not None:
                out["content"] = {_JSON: {"schema": body_schema}}
            return out

        schema["paths"] = {
            "/predict": {
                "post": {
                    "summary": "Score one record or a list of records",
                    "description": "One record in, one prediction out; a list in, a list out (same "
                    "order). Validated against the data contract.",
                    "operationId": "predict",
                    "requestBody": {"required": True, "content": {_JSON: {"schema": body}}},
                    "responses": {
                        "200": described("Prediction(s)", answer),
                        "413": described(
                            f"Body larger than {self.settings.serve.max_body_bytes} "
                            "bytes (refused before parsing)"
                        ),
                        "422": described(
                            "Invalid input: each problem with its field and reason",
                            {"$ref": "#/components/schemas/ErrorBody"},
                        ),
                        "503": described("No model loaded yet (see /ready)"),
                        "504": described("Not scored within serve.request_timeout_s"),
                    },
                }
            },
            **schema.get("paths", {}),
        }
        app.openapi_schema = schema
        return schema

    async def _predict(self, request: Request) -> Response:
        serve = self.settings.serve
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > serve.max_body_bytes:
            return _too_large(serve.max_body_bytes)
        body = await _read_body(request, serve.max_body_bytes)
        if body is None:
            return _too_large(serve.max_body_bytes)
        try:
            rows, single = self.validator.parse(body)
        except RequestInvalid as err:
            process_metrics(serve.metrics).validation_failed(err.fields)
            return Response(orjson.dumps(err.body()), status_code=422, media_type=_JSON)
        header_id = request.headers.get("x-request-id")
        request_id = header_id if header_id and _REQUEST_ID.match(header_id) else uuid.uuid4().hex
        uid = f"{os.getpid()}-{next(self._uid)}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.response_buffer[uid] = ResponseBufferItem(event=_Waiter(future))
        queue = self.litapi_request_queues["/predict"]
        try:
            queue.put(
                (
                    request.app.response_queue_id,
                    uid,
                    time.monotonic(),
                    (request_id, time.time(), rows, single),
                )
            )
        except Overloaded:
            self.response_buffer.pop(uid, None)
            return JSONResponse({"detail": "overloaded; retry later"}, status_code=503)
        timer = loop.call_later(serve.request_timeout_s, _expire, future)
        try:
            await future
        except TimeoutError:
            self.response_buffer.pop(uid, None)
            return JSONResponse({"detail": "not scored in time"}, status_code=504)
        finally:
            timer.cancel()
        item = self.response_buffer.pop(uid)
        (status, payload), _ = item.response
        return Response(
            payload, status_code=status, media_type=_JSON, headers={"x-request-id": request_id}
        )

    async def _ready(self) -> Response:
        workers = self._worker_states()
        ready = bool(workers) and all(w is not None and w.get("ready") for w in workers)
        models = [w.get("model") for w in workers if w and w.get("model")]
        errors = [w.get("error") for w in workers if w and w.get("error")]
        body: dict[str, Any] = {
            "ready": ready,
            "model": models[0] if models else None,
            "workers": len(workers),
        }
        if errors:
            body["error"] = errors[0]
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _metrics(self) -> Response:
        if not self.settings.serve.metrics:
            return JSONResponse({"detail": "metrics are disabled (serve.metrics)"}, status_code=404)
        process_metrics(True).flush()  # this process's counts up to now
        payload, content_type = await asyncio.to_thread(render)
        return Response(payload, media_type=content_type)

    async def _reload(self, request: Request) -> Response:
        env = self.settings.serve.admin_token_env
        token = os.environ.get(env)
        if not token:
            return JSONResponse(
                {"detail": f"admin endpoint disabled: {env} is not set"}, status_code=403
            )
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        ticket = time.time_ns()
        await asyncio.to_thread(self.shared.__setitem__, RELOAD_REQUEST, ticket)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = await asyncio.to_thread(self._worker_states)
            if workers and all(w and int(w.get("handled_reload", 0)) >= ticket for w in workers):
                results = [w["last_reload"] for w in workers if w]
                rejected = [r for r in results if r.get("status") in ("rejected", "unavailable")]
                return JSONResponse(
                    {
                        "status": rejected[0]["status"] if rejected else results[0].get("status"),
                        "workers": results,
                    },
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


# --- building the server ------------------------------------------------------------------


def build_settings(
    params_path: Path | None = None, ipc_dir: str = "", prefetch_dir: str = ""
) -> ServeSettings:
    from plumbline.config import load_params
    from plumbline.contract import load_contract
    from plumbline.paths import project_root
    from plumbline.tracking import tracking_uri

    root = project_root()
    params = load_params(params_path or root / "params.yaml")
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
