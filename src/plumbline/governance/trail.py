"""The audit trail: one append-only record per state change, hash-chained in a SQL table.

Each record holds its sequence number, UTC time, the actor and how it was authenticated, the
action, its subject and evidence, a comment, and the SHA-256 of the previous record; its own
``hash`` is the SHA-256 of the canonical JSON of every other field. Editing a record breaks its
hash; deleting, inserting or reordering one breaks the sequence or the next record's
``prev_hash``: :meth:`AuditTrail.verify` names the first bad record and why.

Pruning removes the oldest records and appends a ``prune_checkpoint`` that names them and the
hash of the last one removed, so what remains still verifies from its first record.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Any, Literal

import sqlalchemy as sa

from plumbline.core.errors import PlumblineError
from plumbline.governance.identity import Actor, iso, now_utc
from plumbline.governance.settings import AuditConfig

log = logging.getLogger("plumbline.governance.trail")

ACTIONS = (
    "register",
    "gate",
    "approval_requested",
    "approve",
    "reject",
    "approval_expired",
    "promote",
    "rollback",
    "rollout_mode",
    "rollout_verdict",
    "retrain_start",
    "retrain_end",
    "reload",
    "user_add",
    "token_add",
    "token_revoke",
    "role_change",
    "refused",
    "prune_checkpoint",
)
GENESIS = "0" * 64
FIELDS = (
    "seq",
    "at",
    "actor",
    "via",
    "action",
    "subject",
    "evidence",
    "comment",
    "prev_hash",
    "hash",
)
SYSTEM = Actor("system", "admin", "system")
DEFAULT_DB = Path("logs/governance/governance.sqlite")
RETRIES = 20  # appends that lost a race for the next seq (databases without a table lock)
# The advisory lock key that serialises appends on PostgreSQL (b"plumblin" as an int64).
PG_APPEND_LOCK = int.from_bytes(b"plumblin", "big")
# What the application's role may do on PostgreSQL (grant_app_role): records are only ever
# inserted and read; users and tokens are also updated (role changes, revocation).
APP_GRANTS = {
    "audit_records": "SELECT, INSERT",
    "users": "SELECT, INSERT, UPDATE",
    "tokens": "SELECT, INSERT, UPDATE",
}

metadata = sa.MetaData()
records_table = sa.Table(
    "audit_records",
    metadata,
    # The chain's order; unique, so two writers can never both add the same next record.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("at", sa.String(32), nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("via", sa.String(20), nullable=False),
    sa.Column("action", sa.String(40), nullable=False, index=True),
    sa.Column("subject", sa.Text, nullable=False),  # canonical JSON
    sa.Column("evidence", sa.Text, nullable=False),  # canonical JSON
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)


class AuditError(PlumblineError):
    pass


def canonical(value: Any) -> str:
    """The one JSON spelling that hashes are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(fields: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every field of a record but ``hash``."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Record:
    seq: int
    at: str  # UTC ISO-8601 with microseconds and Z
    actor: str
    via: str
    action: str
    subject: dict[str, Any]
    evidence: dict[str, Any]
    comment: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(**{name: data[name] for name in FIELDS})


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad: int | None
    reason: str
    head: str = GENESIS  # the newest good record's hash: note it elsewhere to pin the chain

    def __str__(self) -> str:
        if self.ok:
            return f"verified {self.checked} records"
        return f"record {self.first_bad}: {self.reason}"


def parse_time(text: str, now: datetime | None = None) -> str:
    """A time as records store it, from ISO-8601 (a date, or a time with or without a zone;
    no zone = UTC) or an age such as ``7d``, ``12h`` or ``30m``."""
    age = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm])\s*", text)
    if age:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[age.group(2)]
        return iso((now or now_utc()) - timedelta(**{unit: float(age.group(1))}))
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AuditError(
            f"not a time: {text!r} (ISO-8601 such as 2025-01-31 or 2025-01-31T12:00:00Z, "
            "or an age such as 7d, 12h, 30m)"
        ) from None
    return iso(at if at.tzinfo else at.replace(tzinfo=UTC))


def _json_object(value: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """A copy as it will read back from the database (JSON types only)."""
    try:
        out = json.loads(canonical(value or {}))
    except TypeError as err:
        raise AuditError(f"the record's {name} is not JSON: {err}") from None
    if not isinstance(out, dict):
        raise AuditError(f"the record's {name} must be a mapping")
    return out


def _row_record(row: Any) -> Record:
    return Record(
        seq=int(row.seq),
        at=row.at,
        actor=row.actor,
        via=row.via,
        action=row.action,
        subject=json.loads(row.subject),
        evidence=json.loads(row.evidence),
        comment=row.comment,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _text(value: Any) -> str:
    """A JSON string literal, as the canonical dump spells it (non-ASCII kept)."""
    if isinstance(value, str):
        return encode_basestring(value)  # json.dumps' own C escaper, without its set-up
    return json.dumps(value, ensure_ascii=False)


def _stored_hash(row: Any) -> str:
    """A stored row's hash, from its stored text. The JSON columns hold canonical JSON, so the
    record's canonical JSON is their concatenation (in sorted key order); text edited into any
    other spelling no longer matches, as it should not."""
    body = (
        f'{{"action":{_text(row.action)},"actor":{_text(row.actor)},"at":{_text(row.at)},'
        f'"comment":{_text(row.comment)},"evidence":{row.evidence},'
        f'"prev_hash":{_text(row.prev_hash)},"seq":{int(row.seq)},"subject":{row.subject},'
        f'"via":{_text(row.via)}}}'
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def verify_rows(rows: Iterable[Any], checkpoints: dict[int, str]) -> Verification:
    """Check a chain given oldest first (rows with the fields of a record, the JSON ones as
    canonical text). ``checkpoints`` maps the last seq a prune removed to that record's hash:
    the first remaining record may continue from it instead of from the genesis."""
    checked = 0
    prev_seq: int | None = None
    prev_hash = GENESIS
    for row in rows:
        seq = int(row.seq)
        if prev_seq is None:
            if seq != 1:
                removed = checkpoints.get(seq - 1)
                if removed is None:
                    return Verification(
                        False,
                        checked,
                        seq,
                        f"records before seq {seq} are missing and no prune checkpoint names "
                        "them (deleted)",
                    )
                prev_hash = removed
        elif seq != prev_seq + 1:
            reason = (
                f"seq gap: expected {prev_seq + 1} after {prev_seq} (a record was deleted)"
                if seq > prev_seq + 1
                else f"seq {seq} out of order after {prev_seq}"
            )
            return Verification(False, checked, seq, reason, prev_hash)
        if _stored_hash(row) != row.hash:
            return Verification(
                False,
                checked,
                seq,
                "hash mismatch: the record's contents are not what was written (edited, or "
                "renumbered)",
                prev_hash,
            )
        if row.prev_hash != prev_hash:
            what = "the previous record's" if prev_seq is not None else "the genesis or pruned"
            return Verification(
                False,
                checked,
                seq,
                f"prev_hash mismatch: does not match {what} hash (a record before it was "
                "deleted, inserted or reordered)",
                prev_hash,
            )
        checked += 1
        prev_seq, prev_hash = seq, row.hash
    return Verification(True, checked, None, "", prev_hash)


def _sqlite_file(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if str(url.database).startswith("file:"):
        return None
    return Path(str(url.database))


class AuditTrail:
    """The trail in the governance database at ``url`` (the table is made if missing)."""

    def __init__(self, url: str) -> None:
        parsed = sa.make_url(url)
        db = _sqlite_file(parsed)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            # Writers from other processes wait for the file lock this long, not fail at once.
            kwargs["connect_args"] = {"timeout": 60}
        self.engine: sa.Engine = sa.create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_transactions(self.engine)
        try:
            metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError:
            self.engine.dispose()
            raise

    @classmethod
    def for_project(cls, audit: AuditConfig, root: Path, wait_s: float = 0.0) -> AuditTrail:
        """The project's trail: $PLUMBLINE_AUDIT_URL, else ``audit.url``, else the SQLite file
        under logs/ (a relative SQLite path is relative to the project root). With ``wait_s``,
        see ``opened``."""
        url = os.environ.get("PLUMBLINE_AUDIT_URL") or audit.url
        if not url:
            return cls(f"sqlite:///{root / DEFAULT_DB}")
        parsed = sa.make_url(url)
        db = _sqlite_file(parsed)
        if db is not None and not db.is_absolute():
            url = parsed.set(database=str(root / db)).render_as_string(hide_password=False)
        return cls.opened(url, wait_s)

    @classmethod
    def opened(cls, url: str, wait_s: float = 0.0, interval_s: float = 2.0) -> AuditTrail:
        """The trail at ``url``, retried for up to ``wait_s`` while the database refuses
        connections (a server still starting) or the login may not make the missing tables (a
        read-and-insert login before the owner's one-shot made them: ``audit grant``)."""
        started = time.monotonic()
        while True:
            try:
                return cls(url)
            except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
                waited = time.monotonic() - started
                if waited >= wait_s:
                    if wait_s <= 0:
                        raise
                    where = sa.make_url(url).render_as_string(hide_password=True)
                    raise AuditError(
                        f"the governance database {where} was not ready within {wait_s:g} s "
                        f"(last: {getattr(exc, 'orig', exc)})"
                    ) from exc
                log.info("waiting for the governance database: %s", getattr(exc, "orig", exc))
            time.sleep(interval_s)

    def close(self) -> None:
        self.engine.dispose()

    def grant_app_role(self, role: str) -> list[str]:
        """On PostgreSQL, run as the tables' owner: let ``role`` (the application's login) only
        read and insert audit records, and read, insert and update users and tokens; revoke
        everything else, from PUBLIC too. The statements run, in order."""
        if self.dialect != "postgresql":
            raise AuditError(
                f"grants are for PostgreSQL; this governance database is {self.dialect}"
            )
        if not re.fullmatch(r"[a-z_][a-z0-9_$]{0,62}", role):
            raise AuditError(
                f"role name {role!r}: use a lower-case PostgreSQL identifier (a-z, 0-9, _)"
            )
        tables = ", ".join(APP_GRANTS)
        statements = [
            f"REVOKE ALL ON {tables} FROM PUBLIC",
            f"REVOKE ALL ON {tables} FROM {role}",
            f"GRANT USAGE ON SCHEMA public TO {role}",
            *(f"GRANT {rights} ON {table} TO {role}" for table, rights in APP_GRANTS.items()),
        ]
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
        return statements

    # --- writing ---------------------------------------------------------------------------

    def _write_lock(self, conn: sa.Connection) -> None:
        """Serialise appends across processes for the rest of the transaction."""
        if self.dialect == "postgresql":
            # A transaction-scoped advisory lock: writers wait for each other, readers go on.
            # (LOCK TABLE would need UPDATE or DELETE on the table, which the application's
            # role is not granted: see grant_app_role.)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_APPEND_LOCK})
        elif self.dialect in ("mysql", "mariadb"):
            conn.exec_driver_sql(
                "SELECT seq FROM audit_records ORDER BY seq DESC LIMIT 1 FOR UPDATE"
            )
        # SQLite: the transaction began with BEGIN IMMEDIATE (see _sqlite_transactions).

    @staticmethod
    def _head(conn: sa.Connection) -> tuple[int, str]:
        row = conn.execute(
            sa.select(records_table.c.seq, records_table.c.hash)
            .order_by(records_table.c.seq.desc())
            .limit(1)
        ).first()
        return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))

    def _insert(
        self,
        conn: sa.Connection,
        action: str,
        actor: Actor,
        subject: dict[str, Any],
        evidence: dict[str, Any],
        comment: str,
    ) -> Record:
        seq, prev_hash = self._head(conn)
        fields: dict[str, Any] = {
            "seq": seq + 1,
            "at": iso(now_utc()),
            "actor": actor.name,
            "via": actor.via,
            "action": action,
            "subject": subject,
            "evidence": evidence,
            "comment": comment,
            "prev_hash": prev_hash,
        }
        record = Record(**fields, hash=record_hash(fields))
        conn.execute(
            records_table.insert().values(
                **{**fields, "subject": canonical(subject), "evidence": canonical(evidence)},
                hash=record.hash,
            )
        )
        return record

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A write transaction holding the trail's write lock; commits when the block ends."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                self._write_lock(conn)
                yield conn

    def append(
        self,
        action: str,
        actor: Actor,
        subject: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
        comment: str = "",
    ) -> Record:
        """Add the next record: atomic, and safe with writers in other threads and processes."""
        if action not in ACTIONS:
            raise AuditError(f"unknown audit action {action!r}")
        subject_json = _json_object(subject, "subject")
        evidence_json = _json_object(evidence, "evidence")
        for attempt in range(RETRIES):
            try:
                with self._transaction() as conn:
                    return self._insert(
                        conn, action, actor, subject_json, evidence_json, comment or ""
                    )
            except sa.exc.IntegrityError:
                # Another writer took this seq first (no table lock on this database): retry
                # on the new head.
                time.sleep(0.001 * (attempt + 1))
        raise AuditError(f"could not append to the audit trail after {RETRIES} attempts")

    def refusal(
        self, actor: Actor, route: str, method: str, needs: str | None, reason: str = ""
    ) -> Record:
        """Record that ``actor`` was refused ``method route`` (``needs``: the role it lacked,
        None when something else was wrong, such as a CSRF token)."""
        return self.append(
            "refused",
            actor,
            subject={"route": route, "method": method},
            evidence={"needs": needs, "role": actor.role},
            comment=reason,
        )

    def prune(
        self, retain_days: int, now: datetime | None = None, actor: Actor = SYSTEM
    ) -> Record | None:
        """Delete the records older than ``retain_days`` (the oldest ones, never the newest),
        then append a ``prune_checkpoint`` naming what was removed and the hash of its last
        record. None when nothing is old enough."""
        if retain_days < 0:
            raise AuditError(f"retain_days must not be negative, got {retain_days}")
        cutoff = iso((now or now_utc()) - timedelta(days=retain_days))
        try:
            return self._prune(retain_days, cutoff, actor)
        except sa.exc.ProgrammingError as error:
            if "permission denied" not in str(error.orig):
                raise
            raise AuditError(
                "permission denied to delete audit records: this database login may only "
                "insert and read them; prune with the tables' owner (PLUMBLINE_AUDIT_URL)"
            ) from error

    def _prune(self, retain_days: int, cutoff: str, actor: Actor) -> Record | None:
        c = records_table.c
        with self._transaction() as conn:
            head, _ = self._head(conn)
            if head == 0:
                return None
            first = conn.execute(sa.select(sa.func.min(c.seq))).scalar_one()
            young = conn.execute(sa.select(sa.func.min(c.seq)).where(c.at >= cutoff)).scalar()
            # A prefix of the chain: up to the first record young enough, never the newest.
            last = min(int(young) - 1 if young is not None else head, head - 1)
            if last < first:
                return None
            removed = conn.execute(sa.select(c.hash).where(c.seq == last)).scalar_one()
            count = conn.execute(
                sa.delete(records_table).where(c.seq >= first, c.seq <= last)
            ).rowcount
            return self._insert(
                conn,
                "prune_checkpoint",
                actor,
                {"removed": [int(first), last]},
                {
                    "removed": [int(first), last],
                    "removed_sha256": removed,
                    "count": int(count),
                    "retain_days": retain_days,
                    "cutoff": cutoff,
                },
                f"pruned records older than {retain_days} days",
            )

    # --- reading ---------------------------------------------------------------------------

    def records(
        self,
        since: str | None = None,
        actions: Iterable[str] | None = None,
        subject_version: str | None = None,
        subject_model: str | None = None,
    ) -> list[Record]:
        """Records oldest first: from ``since`` (ISO-8601 or an age such as 7d), of these
        ``actions``, about this model version (``subject["version"]``) and this model
        (``subject["model"]``)."""
        query = sa.select(records_table).order_by(records_table.c.seq)
        if subject_model is not None:
            # Exact in SQL: subjects are stored as canonical JSON, so this is the only spelling.
            query = query.where(
                records_table.c.subject.contains(canonical({"model": subject_model})[1:-1])
            )
        if since:
            query = query.where(records_table.c.at >= parse_time(since))
        if actions is not None:
            query = query.where(records_table.c.action.in_(list(actions)))
        if subject_version is not None:
            # A cheap prefilter in SQL; the exact test is on the parsed subject.
            query = query.where(records_table.c.subject.contains(str(subject_version)))
        with self.engine.connect() as conn:
            out = [_row_record(row) for row in conn.execute(query)]
        if subject_version is not None:
            out = [r for r in out if str(r.subject.get("version")) == str(subject_version)]
        return out

    def last(self, n: int, actions: Iterable[str] | None = None) -> list[Record]:
        """The newest ``n`` records (of these ``actions``), oldest first."""
        query = sa.select(records_table).order_by(records_table.c.seq.desc()).limit(n)
        if actions is not None:
            query = query.where(records_table.c.action.in_(list(actions)))
        with self.engine.connect() as conn:
            return [_row_record(row) for row in conn.execute(query)][::-1]

    def verify(self) -> Verification:
        """Check the whole chain from its oldest record; the first bad one and why."""
        c = records_table.c
        with self.engine.connect() as conn:
            checkpoints: dict[int, str] = {}
            for row in conn.execute(
                sa.select(c.evidence).where(c.action == "prune_checkpoint").order_by(c.seq)
            ):
                try:
                    evidence = json.loads(row.evidence)
                    checkpoints[int(evidence["removed"][1])] = str(evidence["removed_sha256"])
                except (ValueError, KeyError, IndexError, TypeError):
                    continue  # an edited checkpoint fails its own hash below
            result = conn.execution_options(yield_per=10_000).execute(
                sa.select(records_table).order_by(c.seq)
            )
            return verify_rows(result, checkpoints)

    def export(self, out: IO[str], fmt: Literal["jsonl", "csv"], since: str | None = None) -> int:
        """Write the records (from ``since``) as JSON lines or CSV (``subject`` and ``evidence``
        as canonical JSON text); the number written. Each line's hash can be checked with
        :func:`record_hash`."""
        records = self.records(since=since)
        if fmt == "jsonl":
            for record in records:
                out.write(canonical(record.to_json()) + "\n")
        elif fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(FIELDS)
            for r in records:
                writer.writerow(
                    [
                        r.seq,
                        r.at,
                        r.actor,
                        r.via,
                        r.action,
                        canonical(r.subject),
                        canonical(r.evidence),
                        r.comment,
                        r.prev_hash,
                        r.hash,
                    ]
                )
        else:
            raise AuditError(f"unknown export format {fmt!r}: jsonl or csv")
        return len(records)


def read_export(lines: Iterable[str], fmt: Literal["jsonl", "csv"]) -> list[Record]:
    """Records back from :meth:`AuditTrail.export`'s output."""
    if fmt == "jsonl":
        return [Record.from_json(json.loads(line)) for line in lines if line.strip()]
    out = []
    for row in csv.DictReader(lines):
        data: dict[str, Any] = dict(row)
        data["seq"] = int(data["seq"])
        data["subject"] = json.loads(data["subject"])
        data["evidence"] = json.loads(data["evidence"])
        out.append(Record.from_json(data))
    return out


def champion_history(trail: AuditTrail, model: str) -> list[Record]:
    """Every move of ``@champion`` of that model (promotions and rollbacks), oldest first."""
    return trail.records(actions=("promote", "rollback"), subject_model=model)


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin transactions, so that an append can begin
    with ``BEGIN IMMEDIATE``: it takes the database's write lock before reading the chain's
    head, so two processes can never chain onto the same record. Also: the journal mode."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        # Write-ahead logging: one sync per append instead of a rollback journal's several,
        # and readers (GET /audit, verify) never block a writer. FULL: a committed record
        # survives a power cut. (The file belongs on a local disk, as SQLite's locks need.)
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=FULL")
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
