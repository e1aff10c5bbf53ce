"""Every use of a LitServe or prometheus_client internal, in one place.

The server is built on LitServe's process layout (a main process, forked HTTP processes,
inference workers running a :class:`litserve.loops.base.LitLoop`) and on its public hooks
where they suffice: ``LitAPI``, a custom ``LitLoop``, ``middlewares``, ``callbacks`` and the
FastAPI ``app`` (``add_api_route``, the route table). What the public API does not offer is
below, one item each, with why. ``pyproject.toml`` pins the LitServe release these were
checked against (:data:`TESTED_LITSERVE`), and :func:`problems` checks that each one still
exists with the expected signature or fields (``tests/unit/serving/test_compat.py`` runs it, and
the server refuses to start when it finds any), so an upgrade fails in seconds with a message
naming what moved, instead of misbehaving under load.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any

TESTED_LITSERVE = "0.2.19"

# --- LitServe ------------------------------------------------------------------------------

#: ``LitServer`` methods the server overrides, with the parameters it relies on.
#:
#: * ``_init_manager(num_api_servers)``: the only place where LitServe creates its request
#:   queues and response transport; the server swaps in ZeroMQ sockets there
#:   (:mod:`plumbline.serving.transport`) and adds its shared state. LitServe's own
#:   ``fast_queue`` option still routes every request through a Manager queue.
#: * ``launch_inference_worker(lit_api)``: LitServe spawns workers; the server forks them
#:   (a spawned worker re-imports everything) and must be able to start one again after a
#:   crash, with the same arguments (see :func:`inference_worker_args`).
#: * ``_start_server(port, num_uvicorn_servers, log_level, sockets, uvicorn_worker_type)``:
#:   the server starts the HTTP processes itself so that it can start a dead one again on the
#:   same listening socket; LitServe offers no hook for either.
#: * ``_start_worker_monitoring(manager, uvicorn_workers)``: LitServe's monitor shuts the whole
#:   server down when a worker dies (or, with ``restart_workers``, spawns a new one but cannot
#:   fail the dead worker's requests, which live in the HTTP processes); the server runs its
#:   own supervisor (:mod:`plumbline.serving.supervisor`) instead.
#: * ``_perform_graceful_shutdown(manager, uvicorn_workers, shutdown_reason)``: wrapped so that
#:   SIGTERM drains in order and runs once.
SERVER_METHODS: dict[str, tuple[str, ...]] = {
    "_init_manager": ("self", "num_api_servers"),
    "launch_inference_worker": ("self", "lit_api"),
    "_start_server": (
        "self",
        "port",
        "num_uvicorn_servers",
        "log_level",
        "sockets",
        "uvicorn_worker_type",
    ),
    "_start_worker_monitoring": ("self", "manager", "uvicorn_workers"),
    "_perform_graceful_shutdown": ("self", "manager", "uvicorn_workers", "shutdown_reason"),
    "_inference_workers_config_for_api": ("self", "api_path"),
    "_get_request_queue": ("self", "api_path"),
}

#: ``LitServer`` attributes set in ``__init__`` or ``run`` that the overrides read or replace:
#: the request queues by route, the response buffer that LitServe's response reader fills
#: (``uid -> ResponseBufferItem``), the setup status dict the workers report to, the callback
#: runner handed to workers, the Manager event that ``run`` waits on, the worker processes
#: that the graceful shutdown stops, and the grace period of the HTTP processes.
SERVER_ATTRIBUTES = (
    "litapi_request_queues",
    "response_buffer",
    "_callback_runner",
    "restart_workers",
    "_shutdown_event",
    "uvicorn_graceful_timeout",
    "middlewares",
)
RUN_ATTRIBUTES = ("workers_setup_status", "_transport", "inference_workers")

#: ``litserve.loops.inference_worker``: the function a worker process runs (set-up, then the
#: loop). Not exported; the server starts worker processes itself, so it calls it with these
#: positional parameters, in this order.
INFERENCE_WORKER_PARAMS = (
    "lit_api",
    "device",
    "worker_id",
    "request_queue",
    "transport",
    "workers_setup_status",
    "callback_runner",
    "restart_workers",
)

#: ``litserve.utils.ResponseBufferItem``: what the HTTP process's response reader fills for a
#: request id. The server's /predict handler creates these itself (LitServe's handler runs
#: FastAPI's dependency machinery per request, costlier than validating the record).
RESPONSE_BUFFER_FIELDS = ("event", "response_queue", "worker_id", "response")

#: The message a worker sends back, ``(uid, (response_data, status, response_type,
#: worker_id))``, as ``LitLoop.put_response`` builds it; the reader stores
#: ``[response_data, status]`` in ``ResponseBufferItem.response``.
PUT_RESPONSE_PARAMS = (
    "self",
    "transport",
    "response_queue_id",
    "uid",
    "response_data",
    "status",
    "response_type",
)

#: The environment variable that ``inference_worker`` (and LitServe's uvicorn wrapper) set to
#: the worker's index; a worker binds its request socket by it.
WORKER_ID_ENV = "LITSERVE_WORKER_ID"


def inference_worker() -> Callable[..., None]:
    from litserve.loops import inference_worker as target

    return target


def inference_worker_args(server: Any, lit_api: Any, worker_id: int) -> tuple[Any, ...]:
    """The positional arguments of :func:`inference_worker` for worker ``worker_id``."""
    devices = server._inference_workers_config_for_api(lit_api.api_path)[worker_id]
    return (
        lit_api,
        devices[0] if len(devices) == 1 else devices,
        worker_id,
        server._get_request_queue(lit_api.api_path),
        server._transport,
        server.workers_setup_status,
        server._callback_runner,
        server.restart_workers,
    )


def worker_setup_key(lit_api: Any, worker_id: int) -> str:
    """The worker's key in ``workers_setup_status`` (LitServe's ``<endpoint>_<id>``)."""
    return f"{lit_api.api_path.split('/')[-1]}_{worker_id}"


def setup_status() -> Any:
    """``litserve.utils.WorkerSetupStatus`` (STARTING / READY / ERROR)."""
    from litserve.utils import WorkerSetupStatus

    return WorkerSetupStatus


def response_buffer_item(event: Any) -> Any:
    from litserve.utils import ResponseBufferItem

    return ResponseBufferItem(event=event)


def response_payload(item: Any) -> Any:
    """What the worker put in ``put_response``'s ``response_data``."""
    response_data, _status = item.response
    return response_data


def loop_response() -> tuple[Any, Any]:
    """``(LitAPIStatus.OK, LoopResponseType.REGULAR)``, the arguments of ``put_response``
    for a finished, non-streamed answer (the enums live in ``litserve.utils``)."""
    from litserve.utils import LitAPIStatus, LoopResponseType

    return LitAPIStatus.OK, LoopResponseType.REGULAR


def message_transport() -> type[Any]:
    """``litserve.transport.base.MessageTransport``: the interface of the response channel
    that LitServe's reader consumes (not exported at the top level)."""
    from litserve.transport.base import MessageTransport

    return MessageTransport


def uvicorn_server() -> type[Any]:
    """``litserve.server._Server``: uvicorn's Server with ``run(worker_id, sockets)``, which
    sets :data:`WORKER_ID_ENV` in the HTTP process before serving on the shared sockets."""
    from litserve.server import _Server

    return _Server


def drop_gzip(app: Any) -> None:
    """LitServe always adds ``GZipMiddleware`` (there is no option to leave it out); the
    answers are small and CPU is scarce, so the server removes it from Starlette's list."""
    app.user_middleware = [
        m for m in app.user_middleware if getattr(m.cls, "__name__", "") != "GZipMiddleware"
    ]


# --- prometheus_client ---------------------------------------------------------------------

#: ``Histogram`` internals used by :func:`histogram_parts`: prometheus_client has no bulk
#: ``observe``; adding pre-bucketed counts to the per-bucket values is one write per bucket
#: instead of one locked write per observation (scoring a batch observes every row).
HISTOGRAM_FIELDS = ("_upper_bounds", "_buckets", "_sum")


def histogram_parts(histogram: Any) -> tuple[list[float], list[Any], Any] | None:
    """``(upper bounds, per-bucket values, sum value)`` of a label-less histogram child."""
    bounds = getattr(histogram, "_upper_bounds", None)
    if bounds is None:
        return None
    return bounds, histogram._buckets, histogram._sum


# --- the check ------------------------------------------------------------------------------


def _params(func: Any) -> tuple[str, ...]:
    return tuple(
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def problems() -> list[str]:
    """Every internal above that is missing or changed shape; empty when all is as tested."""
    import litserve
    from litserve import LitServer
    from litserve.loops.base import LitLoop

    found: list[str] = []
    version = getattr(litserve, "__version__", "?")
    if version != TESTED_LITSERVE:
        found.append(f"litserve {version} is installed; Plumbline is tested with {TESTED_LITSERVE}")
    for name, expected in SERVER_METHODS.items():
        method = getattr(LitServer, name, None)
        if method is None:
            found.append(f"LitServer.{name} is gone")
        elif _params(method)[: len(expected)] != expected:
            found.append(f"LitServer.{name}{_params(method)} no longer starts with {expected}")
    try:
        source = inspect.getsource(LitServer.__init__) + inspect.getsource(LitServer.run)
        source += inspect.getsource(LitServer._init_manager)
    except (OSError, TypeError, AttributeError):
        source = ""
    for attr in (*SERVER_ATTRIBUTES, *RUN_ATTRIBUTES):
        if f"self.{attr}" not in source:
            found.append(f"LitServer no longer sets self.{attr}")
    try:
        worker = inference_worker()
    except ImportError:
        found.append("litserve.loops.inference_worker is gone")
    else:
        if _params(worker) != INFERENCE_WORKER_PARAMS:
            found.append(f"inference_worker{_params(worker)} is not {INFERENCE_WORKER_PARAMS}")
        if WORKER_ID_ENV not in inspect.getsource(worker):
            found.append(f"inference_worker no longer sets {WORKER_ID_ENV}")
    try:
        from litserve.utils import ResponseBufferItem

        fields = tuple(f.name for f in dataclasses.fields(ResponseBufferItem))
        if fields[: len(RESPONSE_BUFFER_FIELDS)] != RESPONSE_BUFFER_FIELDS:
            found.append(f"ResponseBufferItem fields {fields} are not {RESPONSE_BUFFER_FIELDS}")
        status = setup_status()
        for member in ("STARTING", "READY", "ERROR"):
            if not hasattr(status, member):
                found.append(f"WorkerSetupStatus.{member} is gone")
        loop_response()
    except (ImportError, TypeError, AttributeError) as err:
        found.append(f"litserve.utils changed: {err}")
    put = getattr(LitLoop, "put_response", None)
    if put is None or _params(put) != PUT_RESPONSE_PARAMS:
        found.append(f"LitLoop.put_response is not {PUT_RESPONSE_PARAMS}")
    else:
        body = inspect.getsource(put)
        if "(uid, (response_data, status, response_type, self.worker_id))" not in body:
            found.append("LitLoop.put_response sends another message shape")
    try:
        server_cls = uvicorn_server()
        if _params(server_cls.run) != ("self", "worker_id", "sockets"):
            found.append(f"litserve.server._Server.run{_params(server_cls.run)} changed")
    except ImportError:
        found.append("litserve.server._Server is gone")
    try:
        transport = message_transport()
        for method in ("send", "areceive", "close"):
            if not hasattr(transport, method):
                found.append(f"MessageTransport.{method} is gone")
    except ImportError:
        found.append("litserve.transport.base.MessageTransport is gone")
    found += _prometheus_problems()
    return found


def _prometheus_problems() -> list[str]:
    # Read from the source, not from an instance: a histogram made in multiprocess mode
    # would write a stray series to the shared files.
    try:
        from prometheus_client import Histogram

        source = inspect.getsource(Histogram)
    except (ImportError, OSError, TypeError) as err:
        return [f"prometheus_client Histogram cannot be inspected: {err}"]
    return [
        f"prometheus_client Histogram no longer sets self.{field}"
        for field in HISTOGRAM_FIELDS
        if not re.search(rf"self\.{field}\b[^=\n]*=", source)
    ]


def check() -> None:
    """Raise with every finding when the installed versions do not match what was tested."""
    found = problems()
    if found:
        raise RuntimeError(
            "the installed LitServe / prometheus_client differ from what Plumbline was tested "
            f"with (pin litserve=={TESTED_LITSERVE}): " + "; ".join(found)
        )
