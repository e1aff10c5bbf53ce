"""Lean queues between LitServe's HTTP processes and its inference workers.

LitServe 0.2.19 moves every request and every response through ``multiprocessing.Manager``
queues: each put and get is a round trip to the manager process, and the HTTP side reads
responses through a thread hop. That costs about 2.5 ms of CPU per request, more than scoring.
These classes keep LitServe's interfaces (the request queue's ``put``/``get``/``get_nowait`` and
the ``MessageTransport`` of responses) but carry the messages over ZeroMQ PUSH/PULL sockets on
Unix domain sockets, point to point:

* requests: each HTTP process has one PUSH socket per inference worker and picks the worker
  for each request (round robin over the workers that are ready), so it knows which requests
  a worker held if that worker dies; a worker drains what is waiting in one go, which is what
  lets the batching loop see concurrent requests together;
* responses: a worker PUSHes to the PULL socket of the HTTP process that sent the request.

Sockets are made lazily in the process that uses them (ZeroMQ contexts do not survive
``fork``), keyed by process id. Both classes pickle to their addresses only, so LitServe can
hand them to spawned workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
from collections import deque
from queue import Empty
from typing import Any

import zmq
import zmq.asyncio

from plumbline.serving.compat import WORKER_ID_ENV, message_transport

log = logging.getLogger(__name__)

_HWM = 100_000  # messages queued per peer before a send would block


def _address(ipc_dir: str, kind: str, index: int) -> str:
    return f"ipc://{os.path.join(ipc_dir, f'{kind}-{index}')}"


def _tune(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.SNDHWM, _HWM)
    sock.setsockopt(zmq.RCVHWM, _HWM)


class Overloaded(Exception):
    """A request could not be queued for scoring."""


class ZmqRequestQueue:
    """LitServe's per-route request queue, as PUSH (HTTP processes) / PULL (workers)."""

    def __init__(self, ipc_dir: str, route: str, workers: int) -> None:
        self.ipc_dir = ipc_dir
        self.route = route.strip("/").replace("/", "_") or "root"
        self.workers = workers
        self._pid = -1
        self._push: dict[int, zmq.Socket[Any]] = {}
        self._pull: zmq.Socket[Any] | None = None
        self._poller: zmq.Poller | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (ZmqRequestQueue, (self.ipc_dir, "/" + self.route, self.workers))

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._push = {}
            self._pull = None
            self._poller = None

    # --- HTTP side --------------------------------------------------------------------------

    def put(self, item: Any, worker: int = 0) -> None:
        """Queue ``item`` for inference worker ``worker``; Overloaded when its queue is full."""
        self._check_pid()
        sock = self._push.get(worker)
        if sock is None:
            sock = zmq.Context.instance().socket(zmq.PUSH)
            _tune(sock)
            sock.connect(_address(self.ipc_dir, f"req-{self.route}", worker))
            self._push[worker] = sock
        try:
            sock.send(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL), zmq.NOBLOCK)
        except zmq.Again:
            raise Overloaded("the inference worker's queue is full") from None

    # --- worker side ------------------------------------------------------------------------

    def _pull_socket(self) -> zmq.Poller:
        self._check_pid()
        if self._poller is None:
            worker = int(os.environ.get(WORKER_ID_ENV, "0"))
            sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PULL)
            _tune(sock)
            sock.bind(_address(self.ipc_dir, f"req-{self.route}", worker))
            self._pull = sock
            self._poller = zmq.Poller()
            self._poller.register(sock, zmq.POLLIN)
        return self._poller

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        poller = self._pull_socket()
        assert self._pull is not None
        if block:
            wait_ms = None if timeout is None else max(0, int(timeout * 1000))
            if not poller.poll(wait_ms):
                raise Empty
        try:
            return pickle.loads(self._pull.recv(zmq.NOBLOCK))
        except zmq.Again:
            raise Empty from None

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def close(self) -> None:
        for sock in (*self._push.values(), self._pull):
            if sock is not None:
                sock.close(linger=0)
        self._push = {}
        self._pull = None
        self._poller = None


class ZmqResponseTransport(message_transport()):  # type: ignore[misc]
    """Responses from workers to the HTTP process (consumer) that holds the connection."""

    def __init__(self, ipc_dir: str, consumers: int) -> None:
        self.ipc_dir = ipc_dir
        self.consumers = consumers
        self._pid = -1
        self._push: dict[int, zmq.Socket[Any]] = {}
        self._pull: zmq.Socket[Any] | None = None
        self._apull: zmq.asyncio.Socket | None = None
        self._ready: deque[Any] = deque()
        self._closed = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (ZmqResponseTransport, (self.ipc_dir, self.consumers))

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._push = {}
            self._pull = None
            self._apull = None
            self._ready = deque()

    def send(self, item: Any, consumer_id: int) -> None:
        self._check_pid()
        sock = self._push.get(consumer_id)
        if sock is None:
            sock = self._push[consumer_id] = self._connect(consumer_id)
        sock.send(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def _connect(self, consumer_id: int) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PUSH)
        _tune(sock)
        sock.connect(_address(self.ipc_dir, "resp", consumer_id))
        return sock

    def bind(self, consumer_id: int) -> None:
        """Open this HTTP process's response socket (before it sends any request)."""
        self._check_pid()
        if self._pull is None:
            sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PULL)
            _tune(sock)
            sock.bind(_address(self.ipc_dir, "resp", consumer_id))
            self._pull = sock
            self._apull = zmq.asyncio.Socket.from_socket(sock)

    async def areceive(
        self, consumer_id: int, timeout: float | None = None, block: bool = True
    ) -> Any:
        if self._closed:
            raise asyncio.CancelledError("transport closed")
        if self._ready:
            return self._ready.popleft()
        self.bind(consumer_id)
        assert self._pull is not None and self._apull is not None
        if timeout is None:
            first = await self._apull.recv()
        else:
            try:
                first = await asyncio.wait_for(self._apull.recv(), timeout)
            except TimeoutError:
                return None
        # Drain whatever else has arrived without going back to the event loop per message.
        while True:
            try:
                self._ready.append(pickle.loads(self._pull.recv(zmq.NOBLOCK)))
            except zmq.Again:
                break
        return pickle.loads(first)

    def close(self, send_sentinel: bool = True) -> None:
        self._closed = True
        for sock in self._push.values():
            sock.close(linger=0)
        self._push = {}
        if self._apull is not None:
            self._apull.close(linger=0)
        if self._pull is not None:
            self._pull.close(linger=0)
        self._pull = self._apull = None
