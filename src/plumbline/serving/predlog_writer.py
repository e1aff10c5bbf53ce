"""The prediction log: every scored row with its request id, time and model version.

Each inference worker appends scored batches to an in-memory list (a constant-time append
on the response path) and a background thread writes them to Parquet every ``flush_s``
seconds, one row group per flush. A file is written as ``*.parquet.inprogress`` and renamed
to ``predictions-<UTC start>-<host>.<pid>-<n>.parquet`` when it is finished: after ``rotate_rows``
rows, ``rotate_s`` seconds, or at shutdown. Readers (drift, feedback) glob the finished files.
Only the newest ``max_files`` finished files are kept.

A write that fails (disk full, permission denied, the directory gone) loses nothing: the
rows of the failed flush and those already in the unfinished file stay in memory, the
unfinished file is deleted (a reader never sees a partial file, and no empty ones pile up),
and the writer retries with a backoff that doubles from ``flush_s`` up to
``retry_max_s``. Rows are dropped only when more than ``max_pending_rows`` wait to be
written; every dropped row is counted (``plumbline_prediction_log_dropped_rows_total``), every
failed write too (``..._write_failures_total``). Appending never waits for the disk.

Columns: ``request_id``, ``row`` (position in the request), ``received_at`` (UTC),
``model_name``, ``model_version``, the feature columns as the contract types them,
``probability``, ``label`` and ``explanation`` (the JSON of ``?explain=K``'s answer for the
row, null when it was not asked for).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plumbline.core.contract import Contract
from plumbline.core.predlog import IN_PROGRESS, PREFIX, finished_files, log_schema
from plumbline.serving.metrics import ServeMetrics
from plumbline.serving.settings import PredictionLogConfig

# Names this machine's files: several servers (pods) may share one log directory.
HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"

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
    arm: str = "champion"  # who answered these rows (plumbline.serving.rollout.router)
    rollout: str = "off"
    shadow_version: str | None = None  # shadow mode: the challenger that also scored them
    shadow_probabilities: np.ndarray | None = None
    explanations: list[str | None] | None = None  # JSON per row, when ?explain was asked


class PredictionLog:
    def __init__(
        self,
        cfg: PredictionLogConfig,
        directory: Path,
        contract: Contract,
        features: Sequence[str],
        metrics: ServeMetrics,
        opener: Callable[[Path, pa.Schema], pq.ParquetWriter] | None = None,
    ) -> None:
        """``opener`` makes the Parquet writer of a new file (tests inject faults here)."""
        self.cfg = cfg
        self.directory = directory
        self.features = list(features)
        self.schema = log_schema(contract, features)
        self.metrics = metrics
        self._opener = opener or _open_parquet
        self._lock = threading.Lock()
        self._pending: list[Batch] = []
        self._pending_rows = 0
        # Tables taken from _pending that are not in a finished file yet: retried after a
        # failed write. Each entry: (table, already counted as written).
        self._held: list[tuple[pa.Table, bool]] = []
        self._held_rows = 0
        self._file_tables: list[tuple[pa.Table, bool]] = []  # in the unfinished file
        self._wake = threading.Event()
        self._stop = False
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._file_rows = 0
        self._file_started = 0.0
        self._seq = 0
        self._thread: threading.Thread | None = None
        self.failures = 0  # consecutive failed writes (0 once a write succeeds)
        self.last_error: str | None = None

    def start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale_files()
        except OSError as err:  # retried by the writer; serving does not depend on it
            self._failed(err)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        """Rows accepted but not yet in a finished file's row group or retried write."""
        with self._lock:
            return self._pending_rows + self._held_rows

    def append(self, batch: Batch) -> None:
        """Queue a batch for writing; never blocks on I/O."""
        rows = len(batch.rows)
        with self._lock:
            if self._pending_rows + self._held_rows + rows > self.cfg.max_pending_rows:
                dropped = True
            else:
                dropped = False
                self._pending.append(batch)
                self._pending_rows += rows
        if dropped:
            self.metrics.log_dropped(rows)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending and finish the current file (one last try if writes fail)."""
        self._stop = True
        self._wake.set()
        if (
            self._thread is not None
            and self._thread.is_alive()
            and self._thread is not threading.current_thread()
        ):
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            for _attempt in range(3):  # a failure removes the unfinished file: write it again
                try:
                    self._flush()
                    self._finish_file()
                    return
                except Exception as err:
                    self._failed(err)
            lost = self.pending_rows
            if lost:
                # The process is exiting: what could not be written is lost, and counted.
                log.error("prediction log: %d rows could not be written at shutdown", lost)
                self.metrics.log_dropped(lost)

    # --- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self._delay())
            if self._stop:
                break
            try:
                self._flush()
                if self._writer is not None and (
                    self._file_rows >= self.cfg.rotate_rows
                    or time.time() - self._file_started >= self.cfg.rotate_s
                ):
                    self._finish_file()
            except Exception as err:
                self._failed(err)

    def _delay(self) -> float:
        if not self.failures:
            return self.cfg.flush_s
        return min(self.cfg.retry_max_s, self.cfg.flush_s * 2 ** (self.failures - 1))

    def _failed(self, err: BaseException) -> None:
        """A write failed: keep every unfinished row for the retry, leave no partial file."""
        self._abandon_file()
        self.failures += 1
        self.last_error = f"{type(err).__name__}: {err}"
        self.metrics.log_write_failed(self.pending_rows)
        if self.failures == 1 or self.failures % 20 == 0:  # one line per outage, not per try
            log.error(
                "prediction log: writing to %s failed (%s); %d rows kept in memory, retrying "
                "(attempt %d)",
                self.directory,
                self.last_error if isinstance(err, OSError) else repr(err),
                self.pending_rows,
                self.failures,
                exc_info=not isinstance(err, OSError),
            )

    def _flush(self) -> None:
        with self._lock:
            batches, self._pending, self._pending_rows = self._pending, [], 0
            if batches:
                table = self._table(batches)
                self._held.append((table, False))
                self._held_rows += table.num_rows
        if not self._held:
            return
        if self.failures:
            self.directory.mkdir(parents=True, exist_ok=True)  # it may have vanished
        while self._held:
            table, counted = self._held[0]
            if self._writer is None:
                self._open_file()
            assert self._writer is not None
            part = table.slice(0, max(1, self.cfg.rotate_rows - self._file_rows))
            self._writer.write_table(part)
            # The part is in the unfinished file now: from here on a failure puts it back
            # through _file_tables, so it leaves _held at once (never held twice).
            self._file_tables.append((part, True))
            self._file_rows += part.num_rows
            if not counted:
                self.metrics.logged(part.num_rows)
            with self._lock:
                if part.num_rows < table.num_rows:
                    self._held[0] = (table.slice(part.num_rows), counted)
                else:
                    self._held.pop(0)
                self._held_rows -= part.num_rows
            if self._file_rows >= self.cfg.rotate_rows:
                self._finish_file()
        if self.failures:
            log.info("prediction log: writing works again; every kept row is written")
        self.failures = 0
        self.last_error = None
        self.metrics.log_write_ok()

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
        columns.update(_rollout_columns(batches))
        explanations: list[str | None] = []
        for b in batches:
            explanations.extend(b.explanations or [None] * len(b.rows))
        columns["explanation"] = pa.array(explanations, pa.string())
        return pa.table(columns, schema=self.schema)

    def _open_file(self) -> None:
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.directory / f"{PREFIX}{stamp}-{HOST}.{os.getpid()}-{self._seq:05d}.parquet"
        self._path = final.with_name(final.name + IN_PROGRESS)
        self._file_rows = 0
        self._file_tables = []
        self._file_started = time.time()
        self._writer = self._opener(self._path, self.schema)

    def _finish_file(self) -> None:
        if self._writer is None or self._path is None:
            return
        self._writer.close()
        self._path.rename(self._path.with_name(self._path.name[: -len(IN_PROGRESS)]))
        self._writer = None
        self._path = None
        self._file_tables = []
        self._prune()

    def _abandon_file(self) -> None:
        """Close and delete the unfinished file; its rows go back to the front of the retry."""
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:
            log.debug("prediction log: closing a failed file", exc_info=True)
        if self._path is not None:
            try:
                self._path.unlink(missing_ok=True)
            except OSError as err:
                if err.errno != errno.ENOENT:
                    log.warning("prediction log: could not remove %s: %s", self._path, err)
        if self._file_tables:
            with self._lock:
                self._held[:0] = self._file_tables
                self._held_rows += sum(t.num_rows for t, _ in self._file_tables)
        self._file_tables = []
        self._writer = None
        self._path = None
        self._file_rows = 0

    def _remove_stale_files(self) -> None:
        """Unfinished files of processes that no longer run (a killed worker) are unreadable
        (no Parquet footer) and would stay forever: remove them."""
        for path in self.directory.glob(f"{PREFIX}*{IN_PROGRESS}"):
            writer = _writer(path.name)
            if writer is None:
                continue
            host, pid = writer
            # Another host's files (pods sharing one volume): its pids mean nothing here.
            if host not in (None, HOST) or pid == os.getpid() or _alive(pid):
                continue
            log.warning("prediction log: removing %s, left unfinished by process %d", path, pid)
            path.unlink(missing_ok=True)

    def _prune(self) -> None:
        finished = finished_files(self.directory)
        for old in finished[: max(0, len(finished) - self.cfg.max_files)]:
            old.unlink(missing_ok=True)


def _rollout_columns(batches: list[Batch]) -> dict[str, pa.Array]:
    """The arm that answered each row, the mode, and the shadow challenger's score if any."""
    arms: list[str] = []
    modes: list[str] = []
    versions: list[str | None] = []
    shadow: list[np.ndarray] = []
    for b in batches:
        n = len(b.rows)
        arms.extend([b.arm] * n)
        modes.extend([b.rollout] * n)
        versions.extend([b.shadow_version] * n)
        shadow.append(
            np.full(n, np.nan) if b.shadow_probabilities is None else b.shadow_probabilities
        )
    scores = np.concatenate(shadow) if shadow else np.empty(0)
    return {
        "arm": pa.array(arms, pa.string()),
        "rollout": pa.array(modes, pa.string()),
        "shadow_version": pa.array(versions, pa.string()),
        "shadow_probability": pa.array(scores, pa.float64(), mask=np.isnan(scores)),
    }


def _open_parquet(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, compression="zstd")


def _writer(name: str) -> tuple[str | None, int] | None:
    """The host and pid in ``predictions-<stamp>-<host>.<pid>-<n>.parquet.inprogress`` (the
    host is None in names of older releases, ``...-<pid>-<n>...``)."""
    parts = name.split("-")
    if len(parts) < 4:
        return None
    host, _, pid = parts[-2].rpartition(".")
    return (host or None, int(pid)) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
