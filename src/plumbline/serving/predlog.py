"""The prediction log: every scored row with its request id, time and model version.

Each inference worker appends scored batches to an in-memory list (a constant-time append
on the response path) and a background thread writes them to Parquet every ``flush_s``
seconds, one row group per flush. A file is written as ``*.parquet.inprogress`` and renamed
to ``predictions-<UTC start>-<pid>-<n>.parquet`` when it is finished: after ``rotate_rows``
rows, ``rotate_s`` seconds, or at shutdown. Readers (drift, feedback) glob the finished files.
Only the newest ``max_files`` finished files are kept. If the writer falls behind by more than
``max_pending_rows``, new rows are dropped and counted rather than slowing responses down.

Columns: ``request_id``, ``row`` (position in the request), ``received_at`` (UTC),
``model_name``, ``model_version``, the feature columns as the contract types them,
``probability`` and ``label``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plumbline.config import PredictionLogConfig
from plumbline.contract import Contract
from plumbline.predictions import IN_PROGRESS, PREFIX, finished_files, log_schema
from plumbline.serving.metrics import ServeMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """One scoring call's worth of log rows."""

    request_ids: list[str]
    row_counts: list[int]
    received_at: list[float]
    model_name: str
    model_version: str
    rows: list[tuple[Any, ...]]
    probabilities: np.ndarray
    labels: np.ndarray


class PredictionLog:
    def __init__(
        self,
        cfg: PredictionLogConfig,
        directory: Path,
        contract: Contract,
        features: Sequence[str],
        metrics: ServeMetrics,
    ) -> None:
        self.cfg = cfg
        self.directory = directory
        self.features = list(features)
        self.schema = log_schema(contract, features)
        self.metrics = metrics
        self._lock = threading.Lock()
        self._pending: list[Batch] = []
        self._pending_rows = 0
        self._wake = threading.Event()
        self._stop = False
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._file_rows = 0
        self._file_started = 0.0
        self._seq = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, batch: Batch) -> None:
        """Queue a batch for writing; never blocks on I/O."""
        rows = len(batch.rows)
        with self._lock:
            if self._pending_rows + rows > self.cfg.max_pending_rows:
                dropped = True
            else:
                dropped = False
                self._pending.append(batch)
                self._pending_rows += rows
        if dropped:
            self.metrics.log_dropped(rows)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending and finish the current file."""
        self._stop = True
        self._wake.set()
        if (
            self._thread is not None
            and self._thread.is_alive()
            and self._thread is not threading.current_thread()
        ):
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._flush()
            self._finish_file()

    # --- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.cfg.flush_s)
            if self._stop:
                break
            try:
                self._flush()
                if self._writer is not None and (
                    self._file_rows >= self.cfg.rotate_rows
                    or time.time() - self._file_started >= self.cfg.rotate_s
                ):
                    self._finish_file()
            except Exception:
                log.exception("prediction log: writing failed; rows of this flush are lost")
                self._abandon_file()

    def _flush(self) -> None:
        with self._lock:
            batches, self._pending, self._pending_rows = self._pending, [], 0
        if not batches:
            return
        table = self._table(batches)
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._open_file()
            assert self._writer is not None
            room = max(1, self.cfg.rotate_rows - self._file_rows)
            part = table.slice(offset, room)
            self._writer.write_table(part)
            self._file_rows += part.num_rows
            offset += part.num_rows
            if self._file_rows >= self.cfg.rotate_rows:
                self._finish_file()
        self.metrics.logged(table.num_rows)

    def _table(self, batches: list[Batch]) -> pa.Table:
        request_ids: list[str] = []
        positions: list[int] = []
        received: list[float] = []
        names: list[str] = []
        versions: list[str] = []
        rows: list[tuple[Any, ...]] = []
        for b in batches:
            for rid, count, at in zip(b.request_ids, b.row_counts, b.received_at, strict=True):
                request_ids.extend([rid] * count)
                positions.extend(range(count))
                received.extend([at] * count)
            n = len(b.rows)
            names.extend([b.model_name] * n)
            versions.extend([b.model_version] * n)
            rows.extend(b.rows)
        columns: dict[str, Any] = {
            "request_id": pa.array(request_ids, pa.string()),
            "row": pa.array(positions, pa.int32()),
            "received_at": pa.array((np.asarray(received) * 1e6).astype("int64"), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "model_name": pa.array(names, pa.string()),
            "model_version": pa.array(versions, pa.string()),
        }
        for i, name in enumerate(self.features):
            columns[name] = pa.array(list(map(itemgetter(i), rows)), self.schema.field(name).type)
        columns["probability"] = pa.array(
            np.concatenate([b.probabilities for b in batches]), pa.float64()
        )
        columns["label"] = pa.array(
            np.concatenate([b.labels for b in batches]).astype(np.int8), pa.int8()
        )
        return pa.table(columns, schema=self.schema)

    def _open_file(self) -> None:
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.directory / f"{PREFIX}{stamp}-{os.getpid()}-{self._seq:05d}.parquet"
        self._path = final.with_name(final.name + IN_PROGRESS)
        self._writer = pq.ParquetWriter(self._path, self.schema, compression="zstd")
        self._file_rows = 0
        self._file_started = time.time()

    def _finish_file(self) -> None:
        if self._writer is None or self._path is None:
            return
        self._writer.close()
        self._path.rename(self._path.with_name(self._path.name[: -len(IN_PROGRESS)]))
        self._writer = None
        self._path = None
        self._prune()

    def _abandon_file(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:
            log.debug("prediction log: closing a failed file", exc_info=True)
        self._writer = None
        self._path = None

    def _prune(self) -> None:
        finished = finished_files(self.directory)
        for old in finished[: max(0, len(finished) - self.cfg.max_files)]:
            old.unlink(missing_ok=True)
