"""Dynamic batching that does not tax a quiet server.

LitServe's batched loop waits out ``batch_timeout`` for every batch, so at concurrency 1 each
request pays the whole window. This loop takes the first request as soon as it arrives and
everything already queued behind it (up to ``max_batch_size``). Only when that finds other
requests waiting, i.e. under load, does it wait for more, and never past ``batch_timeout``
after the first request was queued. A lone request is scored at once.

Each batch goes through the LitAPI hooks (``decode_request``, ``predict`` on the list,
``encode_response``) in one vectorised call. Should that call fail, the requests are retried
one by one so that one bad request cannot fail the others.
"""

from __future__ import annotations

import logging
import time
from queue import Empty
from typing import Any

from litserve.loops import LitLoop

from plumbline.serving.compat import loop_response

log = logging.getLogger("plumbline.serving")

_IDLE_POLL_S = 0.2  # how long an idle worker blocks before checking for a stop request
_STOP_GRACE_S = 5.0  # a stopping worker that keeps getting requests leaves after this

_ANSWERED = loop_response()  # (status, response type) of a finished, non-streamed answer
_TIMED_OUT = (504, b'{"detail":"the request waited too long for a scoring worker"}')
_SERVER_ERROR = (500, b'{"detail":"internal error while scoring; see the server log"}')


class AdaptiveBatchLoop(LitLoop):
    def collect(
        self, request_queue: Any, max_batch_size: int, batch_timeout: float
    ) -> list[tuple[Any, ...]]:
        try:
            first = request_queue.get(timeout=_IDLE_POLL_S)
        except Empty:
            return []
        items = [first]
        deadline = first[2] + batch_timeout  # first[2]: monotonic time the request was queued
        while len(items) < max_batch_size:
            try:
                items.append(request_queue.get_nowait())
                continue
            except Empty:
                pass
            remaining = deadline - time.monotonic()
            if len(items) == 1 or remaining <= 0:
                break
            try:
                items.append(request_queue.get(timeout=remaining))
            except Empty:
                break
        return items

    def run(
        self,
        lit_api: Any,
        device: str,
        worker_id: int,
        request_queue: Any,
        transport: Any,
        workers_setup_status: Any,
        callback_runner: Any,
    ) -> None:
        items = self.collect(request_queue, lit_api.max_batch_size, lit_api.batch_timeout)
        if lit_api.stopping and (
            not items or time.monotonic() - lit_api.stop_requested_at > _STOP_GRACE_S
        ):
            self._respond_unavailable(transport, items)
            lit_api.shutdown()
            raise SystemExit(0)
        if not items:
            return
        timeout = lit_api.request_timeout
        now = time.monotonic()
        live = []
        for item in items:
            response_queue_id, uid, queued_at, _ = item
            if timeout and timeout != -1 and now - queued_at > timeout:
                self.put_response(
                    transport,
                    response_queue_id,
                    uid,
                    _TIMED_OUT,
                    *_ANSWERED,
                )
            else:
                live.append(item)
        if not live:
            return
        payloads = [lit_api.decode_request(item[3]) for item in live]
        try:
            outputs = lit_api.predict(payloads)
        except Exception:
            log.exception(
                "scoring a batch of %d requests failed; retrying one by one", len(payloads)
            )
            outputs = []
            for payload in payloads:
                try:
                    outputs.extend(lit_api.predict([payload]))
                except Exception:
                    log.exception("scoring request %s failed", payload[0])
                    outputs.append(_SERVER_ERROR)
        for item, output in zip(live, outputs, strict=True):
            self.put_response(
                transport,
                item[0],
                item[1],
                lit_api.encode_response(output),
                *_ANSWERED,
            )

    def _respond_unavailable(self, transport: Any, items: list[tuple[Any, ...]]) -> None:
        for item in items:
            self.put_response(
                transport,
                item[0],
                item[1],
                (503, b'{"detail":"the server is shutting down"}'),
                *_ANSWERED,
            )
