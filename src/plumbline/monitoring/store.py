"""The monitor's store: logged predictions, delayed outcomes and retrain runs, in one SQLite file.

The server writes its prediction log as rotated Parquet files and prunes old ones; labels may
arrive long after a prediction's file is gone. So the monitor copies every finished log file
into ``predictions`` (keyed by request id and row, like the log) once, and joins outcomes
(``feedback``) against that table. An outcome may arrive before its prediction's log file is
finished: it is stored all the same and listed in ``feedback_pending`` until that file is read.
Outcomes are never deleted, pending or not. ``retrains`` records every retraining run, which
also makes the retrain counters survive a restart of the monitor.

Every call opens its own connection (WAL mode, busy timeout): the HTTP handlers, the refresh
loop and a running retrain use the store from different threads, and a ``plumbline retrain``
or ``plumbline drift-report`` process may read it at the same time.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plumbline.core.contract import Contract
from plumbline.core.predlog import META_COLUMNS, OUTPUT_COLUMNS, ROLLOUT_COLUMNS, finished_files

log = logging.getLogger(__name__)

_SQL_TYPES = {"integer": "INTEGER", "float": "REAL", "category": "TEXT", "string": "TEXT"}
# The rollout columns (plumbline.core.predlog.ROLLOUT_COLUMNS), with the value of rows logged
# before they existed.
_ROLLOUT_SQL = {
    "arm": ("TEXT NOT NULL DEFAULT 'champion'", "champion"),
    "rollout": ("TEXT NOT NULL DEFAULT 'off'", "off"),
    "shadow_version": ("TEXT", None),
    "shadow_probability": ("REAL", None),
}
MAX_LISTED = 100  # ids listed in a feedback answer; the counts are always complete


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class IngestResult:
    files: int = 0
    rows: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    request_id: str
    row: int
    outcome: int


@dataclass
class FeedbackResult:
    """What happened to each posted outcome. Nothing is dropped without being reported."""

    received: int = 0
    matched: int = 0  # stored, and the prediction is in the store
    pending: int = 0  # stored; matched once a log file with this id + row is read
    duplicates: int = 0  # the same id + row already had an outcome: the first one is kept
    conflicts: int = 0  # ... a duplicate that disagrees with the stored outcome
    pending_ids: list[dict[str, Any]] = field(default_factory=list)
    duplicate_ids: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.matched + self.pending,
            "matched": self.matched,
            "pending": self.pending,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "pending_ids": self.pending_ids,
            "duplicate_ids": self.duplicate_ids,
        }


@dataclass
class RetrainRecord:
    id: int
    trigger: str
    started_at: float
    finished_at: float | None
    status: str  # running | promoted | rejected | failed
    reason: str
    version: str | None
    champion_before: str | None
    champion_after: str | None
    live_rows: int
    history_rows: int
    newest_live_at: float | None
    workdir: str


class MonitorStore:
    def __init__(self, path: Path, contract: Contract, features: Sequence[str]) -> None:
        self.path = path
        self.features = list(features)
        self.types = {name: contract.columns[name].type for name in self.features}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._create()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def _create(self) -> None:
        columns = ", ".join(f"{_q(n)} {_SQL_TYPES[self.types[n]]}" for n in self.features)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            conn.executescript(f"""
                CREATE TABLE IF NOT EXISTS predictions (
                    request_id TEXT NOT NULL, row INTEGER NOT NULL, received_at REAL NOT NULL,
                    model_name TEXT NOT NULL, model_version TEXT NOT NULL, {columns},
                    probability REAL NOT NULL, label INTEGER NOT NULL,
                    PRIMARY KEY (request_id, row));
                CREATE INDEX IF NOT EXISTS predictions_time ON predictions (received_at);
                CREATE INDEX IF NOT EXISTS predictions_version
                    ON predictions (model_version, received_at);
                CREATE TABLE IF NOT EXISTS feedback (
                    request_id TEXT NOT NULL, row INTEGER NOT NULL, outcome INTEGER NOT NULL,
                    received_at REAL NOT NULL, PRIMARY KEY (request_id, row));
                CREATE TABLE IF NOT EXISTS feedback_pending (
                    request_id TEXT NOT NULL, row INTEGER NOT NULL,
                    PRIMARY KEY (request_id, row));
                CREATE TABLE IF NOT EXISTS log_files (
                    name TEXT PRIMARY KEY, rows INTEGER NOT NULL, duplicates INTEGER NOT NULL,
                    error TEXT, ingested_at REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS retrains (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, trigger TEXT NOT NULL,
                    started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
                    reason TEXT NOT NULL DEFAULT '', version TEXT, champion_before TEXT,
                    champion_after TEXT, live_rows INTEGER NOT NULL DEFAULT 0,
                    history_rows INTEGER NOT NULL DEFAULT 0, newest_live_at REAL,
                    workdir TEXT NOT NULL DEFAULT '');
            """)
            stored = {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
            missing = [n for n in self.features if n not in stored]
            for name in missing:  # a feature added to the contract after the store was made
                conn.execute(
                    f"ALTER TABLE predictions ADD COLUMN {_q(name)} {_SQL_TYPES[self.types[name]]}"
                )
            for name, (sql_type, _) in _ROLLOUT_SQL.items():
                if name not in stored:
                    conn.execute(f"ALTER TABLE predictions ADD COLUMN {_q(name)} {sql_type}")
            # The rollout verdict reads the newest rows logged under a rollout.
            conn.execute(
                "CREATE INDEX IF NOT EXISTS predictions_rollout "
                "ON predictions (rollout, received_at)"
            )
            if "feedback" in tables and "feedback_pending" not in tables:
                # A store made before pending outcomes were tracked: those still without a
                # prediction are pending (any whose prediction was already pruned too).
                conn.execute(
                    "INSERT OR IGNORE INTO feedback_pending SELECT request_id, row FROM feedback f "
                    "WHERE NOT EXISTS (SELECT 1 FROM predictions p "
                    "WHERE p.request_id = f.request_id AND p.row = f.row)"
                )

    # --- the prediction log -----------------------------------------------------------------

    def ingest_log(self, directory: Path, retention_rows: int | None = None) -> IngestResult:
        """Copy finished log files not seen before into ``predictions``."""
        result = IngestResult()
        if not directory.is_dir():
            return result
        files = finished_files(directory)
        if not files:
            return result
        with self.connect() as conn:
            seen = {r[0] for r in conn.execute("SELECT name FROM log_files")}
        for path in files:
            if path.name in seen:
                continue
            try:
                table = pq.read_table(path)
                rows = self._rows(table)
            except Exception as err:  # a corrupt or foreign file: reported, not fatal
                message = f"{path.name}: {type(err).__name__}: {err}"
                log.warning("prediction log file skipped: %s", message)
                result.errors.append(message)
                with self.connect() as conn:
                    conn.execute(
                        "INSERT OR REPLACE INTO log_files VALUES (?, 0, 0, ?, ?)",
                        (path.name, message, time.time()),
                    )
                continue
            names = [*META_COLUMNS, *self.features, *OUTPUT_COLUMNS, *ROLLOUT_COLUMNS]
            sql = (
                f"INSERT OR IGNORE INTO predictions ({', '.join(_q(n) for n in names)}) "
                f"VALUES ({', '.join('?' for _ in names)})"
            )
            with self.connect() as conn:
                before = conn.total_changes
                conn.executemany(sql, rows)
                inserted = conn.total_changes - before
                if inserted:
                    # In the same transaction as the rows: an outcome posted meanwhile is either
                    # seen here or sees the prediction itself.
                    conn.execute(
                        "DELETE FROM feedback_pending WHERE EXISTS (SELECT 1 FROM predictions p "
                        "WHERE p.request_id = feedback_pending.request_id "
                        "AND p.row = feedback_pending.row)"
                    )
                conn.execute(
                    "INSERT OR REPLACE INTO log_files VALUES (?, ?, ?, NULL, ?)",
                    (path.name, len(rows), len(rows) - inserted, time.time()),
                )
            result.files += 1
            result.rows += inserted
            result.duplicates += len(rows) - inserted
        with self.connect() as conn:
            present = {p.name for p in files}
            gone = [(n,) for n in seen - present]
            conn.executemany("DELETE FROM log_files WHERE name = ?", gone)
            if retention_rows is not None:
                conn.execute(
                    """DELETE FROM predictions WHERE rowid IN (
                    SELECT rowid FROM predictions ORDER BY received_at DESC, rowid DESC
                    LIMIT -1 OFFSET ?)""",
                    (retention_rows,),
                )
        return result

    def _rows(self, table: pa.Table) -> list[tuple[Any, ...]]:
        names = table.schema.names
        missing = [c for c in [*META_COLUMNS, *OUTPUT_COLUMNS] if c not in names]
        if missing:
            raise ValueError(f"not a prediction log file: no columns {missing}")
        received = pc.divide(
            pc.cast(table["received_at"].cast(pa.timestamp("us", tz="UTC")), pa.int64()).cast(
                pa.float64()
            ),
            1e6,
        )
        columns: list[list[Any]] = [
            table["request_id"].to_pylist(),
            table["row"].to_pylist(),
            received.to_pylist(),
            table["model_name"].to_pylist(),
            table["model_version"].to_pylist(),
        ]
        for name in self.features:
            columns.append(
                table[name].to_pylist() if name in table.schema.names else [None] * table.num_rows
            )
        columns.append(table["probability"].to_pylist())
        columns.append(table["label"].to_pylist())
        for name, (_, default) in _ROLLOUT_SQL.items():
            columns.append(table[name].to_pylist() if name in names else [default] * table.num_rows)
        return list(zip(*columns, strict=True))

    # --- feedback ---------------------------------------------------------------------------

    def add_feedback(self, outcomes: Sequence[Outcome], now: float | None = None) -> FeedbackResult:
        now = time.time() if now is None else now
        result = FeedbackResult(received=len(outcomes))
        with self.connect() as conn:
            for item in outcomes:
                key = (item.request_id, item.row)
                stored = conn.execute(
                    "SELECT outcome FROM feedback WHERE request_id = ? AND row = ?", key
                ).fetchone()
                if stored is not None:
                    result.duplicates += 1
                    conflict = int(stored[0]) != item.outcome
                    result.conflicts += conflict
                    if len(result.duplicate_ids) < MAX_LISTED:
                        result.duplicate_ids.append(
                            {
                                "request_id": item.request_id,
                                "row": item.row,
                                "kept_outcome": int(stored[0]),
                                "conflict": conflict,
                            }
                        )
                    continue
                conn.execute("INSERT INTO feedback VALUES (?, ?, ?, ?)", (*key, item.outcome, now))
                known = conn.execute(
                    "SELECT 1 FROM predictions WHERE request_id = ? AND row = ?", key
                ).fetchone()
                if known:
                    result.matched += 1
                else:
                    conn.execute("INSERT OR IGNORE INTO feedback_pending VALUES (?, ?)", key)
                    result.pending += 1
                    if len(result.pending_ids) < MAX_LISTED:
                        result.pending_ids.append({"request_id": item.request_id, "row": item.row})
        return result

    def feedback_counts(self) -> dict[str, int]:
        """Stored outcomes: joined to a prediction in the store; pending (never matched yet);
        pruned (matched, but ``monitor.retention_rows`` has since deleted the prediction, so
        the outcome is kept but no longer in any window)."""
        with self.connect() as conn:
            total = conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
            joined = conn.execute(
                "SELECT COUNT(*) FROM feedback f JOIN predictions p USING (request_id, row)"
            ).fetchone()[0]
            pending = conn.execute("SELECT COUNT(*) FROM feedback_pending").fetchone()[0]
        return {
            "stored": int(total),
            "joined": int(joined),
            "pending": int(pending),
            "pruned": max(0, int(total - joined - pending)),
        }

    # --- windows ----------------------------------------------------------------------------

    def _frame(self, sql: str, args: Sequence[Any]) -> pd.DataFrame:
        with self.connect() as conn:
            frame = pd.read_sql_query(sql, conn, params=list(args))
        return frame.iloc[::-1].reset_index(drop=True)  # queries read newest first

    def window(self, rows: int) -> pd.DataFrame:
        """The newest ``rows`` logged predictions, oldest first."""
        return self._frame(
            "SELECT * FROM predictions ORDER BY received_at DESC, rowid DESC LIMIT ?", (rows,)
        )

    def labelled(
        self, rows: int, version: str | None = None, since: float | None = None
    ) -> pd.DataFrame:
        """The newest ``rows`` predictions that have an outcome (column ``outcome``), oldest
        first; only those of ``version`` / received after ``since`` when given."""
        where: list[str] = []
        args: list[Any] = []
        if version is not None:
            where.append("p.model_version = ?")
            args.append(version)
        if since is not None:
            where.append("p.received_at > ?")
            args.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._frame(
            f"SELECT p.*, f.outcome AS outcome FROM predictions p JOIN feedback f "
            f"USING (request_id, row) {clause} ORDER BY p.received_at DESC, p.rowid DESC "
            f"LIMIT ?",
            (*args, rows),
        )

    def count_labelled(self, since: float | None = None) -> int:
        sql = "SELECT COUNT(*) FROM predictions p JOIN feedback f USING (request_id, row)"
        with self.connect() as conn:
            if since is None:
                return int(conn.execute(sql).fetchone()[0])
            return int(conn.execute(sql + " WHERE p.received_at > ?", (since,)).fetchone()[0])

    def prediction_rows(self) -> int:
        with self.connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    def versions(self) -> list[dict[str, Any]]:
        """Per model version: logged rows, labelled rows, first and last prediction time."""
        with self.connect() as conn:
            rows = conn.execute("""
                SELECT p.model_version, COUNT(*), COUNT(f.outcome), MIN(p.received_at),
                       MAX(p.received_at)
                FROM predictions p LEFT JOIN feedback f USING (request_id, row)
                GROUP BY p.model_version ORDER BY MIN(p.received_at)""").fetchall()
        return [
            {
                "model_version": r[0],
                "rows": int(r[1]),
                "labelled": int(r[2]),
                "first_at": float(r[3]),
                "last_at": float(r[4]),
            }
            for r in rows
        ]

    # --- retrain runs -----------------------------------------------------------------------

    def start_retrain(self, trigger: str, workdir: str, now: float | None = None) -> int:
        with self.connect() as conn:
            cursor = conn.execute(
                "INSERT INTO retrains (trigger, started_at, status, workdir) VALUES "
                "(?, ?, 'running', ?)",
                (trigger, time.time() if now is None else now, workdir),
            )
            return int(cursor.lastrowid or 0)

    def finish_retrain(self, run_id: int, status: str, reason: str, **fields: Any) -> None:
        allowed = {
            "version",
            "champion_before",
            "champion_after",
            "live_rows",
            "history_rows",
            "newest_live_at",
            "workdir",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown retrain fields: {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.connect() as conn:
            conn.execute(
                f"UPDATE retrains SET status = ?, reason = ?, finished_at = ?"
                f"{', ' + sets if sets else ''} WHERE id = ?",
                (status, reason, time.time(), *fields.values(), run_id),
            )

    def interrupted_retrains(self) -> int:
        """Mark runs left 'running' by a process that died as failed (call with the lock held)."""
        with self.connect() as conn:
            cursor = conn.execute(
                "UPDATE retrains SET status = 'failed', finished_at = ?, reason = "
                "'interrupted: the process running it stopped' WHERE status = 'running'",
                (time.time(),),
            )
            return int(cursor.rowcount)

    def retrains(self, limit: int = 100) -> list[RetrainRecord]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id, trigger, started_at, finished_at, status, reason, version, "
                "champion_before, champion_after, live_rows, history_rows, newest_live_at, "
                "workdir FROM retrains ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [RetrainRecord(*r) for r in rows]

    def retrain_counts(self) -> dict[str, int]:
        with self.connect() as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM retrains GROUP BY status")
            return {str(s): int(n) for s, n in rows}
