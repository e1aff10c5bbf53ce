"""The LitAPI: what each inference worker does with a batch of validated requests.

Requests arrive already validated (the HTTP process checks them against the contract, see
:mod:`plumbline.serving.schema`) as ``(request_id, received_at, rows, single, explain)``
(``explain``: the K of ``?explain=K``, 0 without it). A batch of them
is scored with one vectorised call of the serving model's scorer, split back per request and
encoded to the JSON bytes that the HTTP process returns unchanged. The worker also records
the scoring metrics and appends the batch to the prediction log (in the background).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import litserve as ls
import numpy as np
import orjson

from plumbline.core.contract import Contract
from plumbline.serving.explaining import explain_batch, explained_output
from plumbline.serving.loop import AdaptiveBatchLoop
from plumbline.serving.metrics import ServeMetrics
from plumbline.serving.predlog_writer import Batch, PredictionLog
from plumbline.serving.settings import ServingParams
from plumbline.serving.source import ModelSource, SourceSettings

if TYPE_CHECKING:
    from plumbline.serving.rollout.router import Rollout

log = logging.getLogger("plumbline.serving")

# (request_id, received_at, rows, single, explain K or 0[, sticky header value]): the sixth
# item only when serve.rollout.sticky_key names a header (plumbline.serving.rollout.router).
Payload = tuple[Any, ...]
Output = tuple[int, bytes]

NOT_READY = orjson.dumps({"detail": "no model is loaded yet; see GET /ready"})


@dataclass(frozen=True)
class ServeSettings:
    """Everything a server process needs, resolved once in the main process (picklable)."""

    params: ServingParams
    contract: Contract
    features: list[str]
    root: Path
    tracking_uri: str
    prediction_log_dir: Path
    ipc_dir: str = ""
    prefetch_dir: str = ""  # where the start-up fetch of the champion writes its result

    @property
    def serve(self) -> Any:
        return self.params.serve

    def source_settings(self) -> SourceSettings:
        fallback = self.serve.fallback_artifact
        return SourceSettings(
            model_name=self.params.mlflow.model_name,
            alias=self.serve.model_alias,
            tracking_uri=self.tracking_uri,
            fallback=None
            if fallback is None
            else self.params.resolve(fallback)
            if not fallback.is_absolute()
            else fallback,
        )


class PredictAPI(ls.LitAPI):
    def __init__(self, settings: ServeSettings) -> None:
        super().__init__(
            max_batch_size=settings.serve.max_batch_size,
            batch_timeout=settings.serve.batch_timeout_s,
            api_path="/predict",
            loop=AdaptiveBatchLoop(),
        )
        self.settings = settings
        self.shared: Any = None  # the server's shared state (a Manager dict), set before spawn
        self.stopping = False
        self.stop_requested_at = 0.0

    # --- worker start -----------------------------------------------------------------------

    def setup(self, device: str) -> None:
        from threadpoolctl import threadpool_limits

        from plumbline.serving.reload import ModelManager

        threadpool_limits(1)  # one core per worker; the batch is small and OpenMP only hurts
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        serve = self.settings.serve
        self.worker_id = int(os.environ.get("LITSERVE_WORKER_ID", "0"))
        self.threshold = float(serve.threshold)
        self.metrics = ServeMetrics(serve.metrics, role="worker")
        self.metrics.not_ready()
        self.predlog: PredictionLog | None = None
        if serve.prediction_log.enabled:
            self.predlog = PredictionLog(
                serve.prediction_log,
                self.settings.prediction_log_dir,
                self.settings.contract,
                self.settings.features,
                self.metrics,
            )
            self.predlog.start()
        source = ModelSource(
            self.settings.source_settings(), self.settings.contract, self.settings.features
        )
        prefetch = Path(self.settings.prefetch_dir) if self.settings.prefetch_dir else None
        self.models = ModelManager(
            source, self.metrics, self.shared, self.worker_id, serve.poll_interval_s, prefetch
        )
        self.models.start()
        self.rollout = self._rollout(source.settings)
        self.rollout.start()
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        gc.collect()
        gc.freeze()  # long-lived start-up objects: out of the collector's full passes

    def _rollout(self, champion: SourceSettings) -> Rollout:
        """The challenger side (serve.rollout): idle until a rollout mode is set."""
        from plumbline.serving.metrics import ArmMetrics
        from plumbline.serving.rollout.router import ChallengerManager, Rollout

        serve = self.settings.serve
        arm_metrics = ArmMetrics(serve.metrics)

        def challenger() -> ChallengerManager:
            settings = dataclasses.replace(
                champion, alias=serve.rollout.challenger_alias, fallback=None
            )
            source = ModelSource(settings, self.settings.contract, self.settings.features)
            # ArmMetrics stands in for ServeMetrics: the challenger's loads are counted on
            # its own series, never on the champion's model_ready / reloads.
            metrics: Any = arm_metrics
            return ChallengerManager(
                source, metrics, self.shared, self.worker_id, serve.poll_interval_s
            )

        return Rollout(
            serve.rollout,
            self.settings.features,
            self.threshold,
            arm_metrics,
            self.predlog,
            self.metrics.scored,
            challenger,
            self.shared,
            self.worker_id,
        )

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_requested_at = time.monotonic()
            log.info("worker %s: stop requested; finishing queued requests", self.worker_id)

    def shutdown(self) -> None:
        """Flush the prediction log and stop the watcher (called by the loop when idle)."""
        self.models.stop()
        self.rollout.stop()
        self.metrics.flush()
        if self.predlog is not None:
            self.predlog.close()
        log.info("worker %s stopped", self.worker_id)

    # --- the LitAPI hooks -------------------------------------------------------------------

    def decode_request(self, request: Payload, **kwargs: Any) -> Payload:
        return request

    def predict(self, requests: list[Payload], **kwargs: Any) -> list[Output]:
        model = self.models.active  # read once: the whole batch is scored by one version
        if model is None:
            return [(503, NOT_READY)] * len(requests)
        if self.rollout.active:
            explained = [i for i, r in enumerate(requests) if r[4]]
            if not explained:
                return self.rollout.predict(requests, model)
            # An explanation is the champion's: explained requests are answered by it alone,
            # and the rollout (shadow scores, canary share) sees the others.
            others = [i for i, r in enumerate(requests) if not r[4]]
            merged: list[Output | None] = [None] * len(requests)
            for indices, answers in (
                (explained, self._answer([requests[i] for i in explained], model)),
                (
                    others,
                    self.rollout.predict([requests[i] for i in others], model) if others else [],
                ),
            ):
                for i, answer in zip(indices, answers, strict=True):
                    merged[i] = answer
            return [answer for answer in merged if answer is not None]
        return self._answer(requests, model)

    def _answer(self, requests: list[Payload], model: Any) -> list[Output]:
        """Every request scored by ``model`` (the champion), explained where asked."""
        rows: list[tuple[Any, ...]] = []
        counts: list[int] = []
        for request in requests:
            rows.extend(request[2])
            counts.append(len(request[2]))
        probabilities = model.scorer.proba(rows)
        labels = (probabilities >= self.threshold).astype(np.int64)
        outputs: list[Output] = []
        start = 0
        p_list = probabilities.tolist()
        l_list = labels.tolist()
        logged_explanations: list[str | None] | None = None
        batch_explained: list[Any] = []
        if any(r[4] for r in requests):
            logged_explanations = [None] * len(rows)
            batch_explained = explain_batch(model, requests)  # one call for all of them
        for index, (request, n) in enumerate(zip(requests, counts, strict=True)):
            request_id, request_rows, single, explain = (
                request[0],
                request[2],
                request[3],
                request[4],
            )
            if explain:
                assert logged_explanations is not None
                outputs.append(
                    explained_output(
                        model,
                        request_id,
                        request_rows,
                        single,
                        explain,
                        p_list[start : start + n],
                        l_list[start : start + n],
                        logged_explanations,
                        start,
                        batch_explained[index],
                    )
                )
                start += n
                continue
            if single:
                body = orjson.dumps(
                    {
                        "probability": p_list[start],
                        "label": l_list[start],
                        "model_name": model.name,
                        "model_version": model.version,
                        "request_id": request_id,
                    }
                )
            else:
                body = orjson.dumps(
                    [
                        {
                            "probability": p,
                            "label": lab,
                            "model_name": model.name,
                            "model_version": model.version,
                            "request_id": request_id,
                        }
                        for p, lab in zip(
                            p_list[start : start + n], l_list[start : start + n], strict=True
                        )
                    ]
                )
            outputs.append((200, body))
            start += n
        self.metrics.scored(len(requests), probabilities, labels)
        if self.predlog is not None:
            self.predlog.append(
                Batch(
                    request_ids=[r[0] for r in requests],
                    row_counts=counts,
                    received_at=[r[1] for r in requests],
                    model_name=model.name,
                    model_version=model.version,
                    rows=rows,
                    probabilities=probabilities,
                    labels=labels,
                    explanations=logged_explanations,
                )
            )
        return outputs

    def encode_response(self, output: Output, **kwargs: Any) -> Output:
        return output
