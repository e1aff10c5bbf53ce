"""The audit trail: the hash chain verifies, and tampering with the table in plain SQL (editing,
deleting, inserting, reordering a row) makes ``verify`` fail and name the record; pruning
keeps it verifiable; exports round-trip; concurrent appends keep one chain."""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy

from plumbline.governance.identity import Actor
from plumbline.governance.settings import AuditConfig
from plumbline.governance.trail import (
    GENESIS,
    AuditError,
    AuditTrail,
    champion_history,
    read_export,
    record_hash,
)

ALICE = Actor("alice", "approver", "token")
BOB = Actor("bob", "operator", "proxy")


def trail_with(path: Path, n: int = 6) -> AuditTrail:
    trail = AuditTrail(f"sqlite:///{path}")
    for i in range(1, n + 1):
        trail.append(
            "promote" if i % 2 else "gate",
            ALICE if i % 2 else BOB,
            {"model": "m", "version": str(i), "alias": "champion"},
            {"gate_json_sha256": f"{i:064x}", "statistics": {"auc": 0.5 + i / 100}},
            f"step {i} — ünïcode",
        )
    return trail


def sql(path: Path, *statements: str) -> None:
    """What an attacker with write access to the database file does."""
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gov.sqlite"


def test_a_fresh_chain_verifies_and_links_every_record(db: Path) -> None:
    trail = trail_with(db)
    records = trail.records()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    for r in records:
        assert r.hash == record_hash(r.to_json())
        assert r.at.endswith("Z") and len(r.at) == len("2025-01-01T00:00:00.000000Z")
    result = trail.verify()
    assert (result.ok, result.checked, result.first_bad) == (True, 6, None)
    assert str(result) == "verified 6 records"
    assert result.head == records[-1].hash


def test_the_hash_is_sha256_of_the_canonical_json_of_the_other_fields(db: Path) -> None:
    import hashlib

    record = trail_with(db, 1).records()[0]
    body = {k: v for k, v in record.to_json().items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert record.hash == hashlib.sha256(text.encode()).hexdigest()


def test_an_empty_trail_verifies(db: Path) -> None:
    assert AuditTrail(f"sqlite:///{db}").verify().ok


@pytest.mark.parametrize(
    ("tamper", "bad", "reason"),
    [
        (["UPDATE audit_records SET comment = 'nothing to see' WHERE seq = 3"], 3, "hash"),
        (['UPDATE audit_records SET actor = "mallory" WHERE seq = 5'], 5, "hash"),
        (
            [
                "UPDATE audit_records SET subject = "
                '\'{"alias":"champion","model":"m","version":"99"}\' WHERE seq = 2'
            ],
            2,
            "hash",
        ),
        (["DELETE FROM audit_records WHERE seq = 4"], 5, "seq gap"),
        (["DELETE FROM audit_records WHERE seq = 1"], 2, "missing"),
        # Delete a row and close the gap: the next record's prev_hash gives it away.
        (
            [
                "DELETE FROM audit_records WHERE seq = 3",
                "UPDATE audit_records SET seq = seq - 1 WHERE seq > 3",
            ],
            3,
            "hash",
        ),
        # Swap two rows' positions in the chain.
        (
            [
                "UPDATE audit_records SET seq = -1 WHERE seq = 3",
                "UPDATE audit_records SET seq = 3 WHERE seq = 4",
                "UPDATE audit_records SET seq = 4 WHERE seq = -1",
            ],
            3,
            "hash",
        ),
    ],
    ids=["comment", "actor", "subject", "delete", "delete-first", "delete-renumber", "swap"],
)
def test_tampering_fails_verify_and_names_the_record(
    db: Path, tamper: list[str], bad: int, reason: str
) -> None:
    trail = trail_with(db)
    assert trail.verify().ok
    sql(db, *tamper)
    result = trail.verify()
    assert not result.ok
    assert result.first_bad == bad
    assert reason in result.reason
    assert str(result).startswith(f"record {bad}: ")


def test_a_forged_row_with_a_valid_hash_breaks_the_next_link(db: Path) -> None:
    """An attacker who knows the hash rule replaces record 3 by a self-consistent forgery: its
    own hash checks, but record 4 still names the real record 3."""
    trail = trail_with(db)
    real = trail.records()[2]
    forged = {**real.to_json(), "comment": "approved by the board", "actor": "ceo"}
    forged["hash"] = record_hash(forged)
    sql(
        db,
        "DELETE FROM audit_records WHERE seq = 3",
        "INSERT INTO audit_records VALUES (3, '{at}', 'ceo', 'token', 'promote', '{subject}', "
        "'{evidence}', 'approved by the board', '{prev}', '{hash}')".format(
            at=real.at,
            subject=json.dumps(real.subject, sort_keys=True, separators=(",", ":")),
            evidence=json.dumps(real.evidence, sort_keys=True, separators=(",", ":")),
            prev=real.prev_hash,
            hash=forged["hash"],
        ),
    )
    result = trail.verify()
    assert (result.ok, result.first_bad) == (False, 4)
    assert "prev_hash mismatch" in result.reason


def test_an_inserted_row_is_found(db: Path) -> None:
    trail = trail_with(db)
    head = trail.records()[-1]
    sql(
        db,
        "INSERT INTO audit_records VALUES (7, '2030-01-01T00:00:00.000000Z', 'mallory', 'token', "
        f"'promote', '{{}}', '{{}}', '', '{head.hash}', '{'f' * 64}')",
    )
    result = trail.verify()
    assert (result.ok, result.first_bad) == (False, 7)
    assert "hash mismatch" in result.reason


def test_prune_keeps_the_chain_verifiable_and_the_checkpoint_names_what_went(db: Path) -> None:
    trail = trail_with(db, 6)
    # Age records 1..4 by rewriting their times and rehashing the chain, as if written long ago.
    old = datetime.now(UTC) - timedelta(days=30)
    with sqlite3.connect(db) as conn:
        prev = GENESIS
        for record in trail.records():
            fields = record.to_json()
            if record.seq <= 4:
                fields["at"] = (old + timedelta(seconds=record.seq)).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ"
                )
            fields["prev_hash"] = prev
            fields["hash"] = prev = record_hash(fields)
            conn.execute(
                "UPDATE audit_records SET at = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (fields["at"], fields["prev_hash"], fields["hash"], record.seq),
            )
    assert trail.verify().ok
    removed_hash = trail.records()[3].hash

    checkpoint = trail.prune(7, actor=ALICE)
    assert checkpoint is not None
    assert checkpoint.action == "prune_checkpoint" and checkpoint.seq == 7
    assert checkpoint.evidence["removed"] == [1, 4]
    assert checkpoint.evidence["removed_sha256"] == removed_hash
    assert checkpoint.evidence["count"] == 4
    assert checkpoint.actor == "alice"
    assert [r.seq for r in trail.records()] == [5, 6, 7]
    result = trail.verify()
    assert (result.ok, result.checked) == (True, 3)

    assert trail.prune(7, actor=ALICE) is None  # nothing old enough any more
    # Pruning never removes the newest record, even with a retention of 0 days.
    again = trail.prune(0, actor=ALICE)
    assert again is not None and again.evidence["removed"] == [5, 6]
    assert [r.seq for r in trail.records()] == [7, 8]
    assert trail.verify().ok

    # Deleting the first remaining record is still caught: no checkpoint names its predecessor.
    sql(db, "DELETE FROM audit_records WHERE seq = 7")
    result = trail.verify()
    assert (result.ok, result.first_bad) == (False, 8)
    assert "no prune checkpoint" in result.reason


def test_records_filter_by_time_action_and_version(db: Path) -> None:
    trail = trail_with(db)
    assert [r.seq for r in trail.records(actions=["gate"])] == [2, 4, 6]
    assert [r.seq for r in trail.records(subject_version="3")] == [3]
    assert len(trail.records(since="2000-01-01")) == 6
    assert trail.records(since="2999-01-01T00:00:00Z") == []
    assert len(trail.records(since="1h")) == 6
    with pytest.raises(AuditError, match="not a time"):
        trail.records(since="yesterday")
    assert [r.seq for r in trail.last(2)] == [5, 6]
    assert [r.subject["version"] for r in champion_history(trail, "m")] == ["1", "3", "5"]
    assert champion_history(trail, "other") == []


def test_append_refuses_an_unknown_action_and_non_json(db: Path) -> None:
    trail = AuditTrail(f"sqlite:///{db}")
    with pytest.raises(AuditError, match="unknown audit action"):
        trail.append("promoted", ALICE)
    with pytest.raises(AuditError, match="not JSON"):
        trail.append("promote", ALICE, {"model": object()})
    assert trail.records() == []


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_round_trips(db: Path, fmt: str) -> None:
    trail = trail_with(db)
    out = io.StringIO()
    assert trail.export(out, fmt) == 6  # type: ignore[arg-type]
    back = read_export(io.StringIO(out.getvalue()), fmt)  # type: ignore[arg-type]
    assert back == trail.records()
    assert all(r.hash == record_hash(r.to_json()) for r in back)
    since = io.StringIO()
    assert trail.export(since, fmt, since="2999-01-01") == 0  # type: ignore[arg-type]


def test_concurrent_appends_from_two_threads_keep_one_chain(db: Path) -> None:
    trail_with(db, 1)
    errors: list[BaseException] = []

    def writer(actor: Actor) -> None:
        try:
            own = AuditTrail(f"sqlite:///{db}")  # as another process would: its own engine
            for i in range(40):
                own.append("reload", actor, {"i": i})
            own.close()
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(a,)) for a in (ALICE, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    trail = AuditTrail(f"sqlite:///{db}")
    result = trail.verify()
    assert (result.ok, result.checked) == (True, 81)
    assert sorted(r.seq for r in trail.records()) == list(range(1, 82))


def test_for_project_defaults_to_a_file_under_logs_and_the_variable_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLUMBLINE_AUDIT_URL", raising=False)
    AuditTrail.for_project(AuditConfig(), tmp_path).append("reload", BOB)
    assert (tmp_path / "logs/governance/governance.sqlite").is_file()

    AuditTrail.for_project(AuditConfig(url="sqlite:///elsewhere/a.sqlite"), tmp_path)
    assert (tmp_path / "elsewhere/a.sqlite").is_file()  # relative to the project root

    monkeypatch.setenv("PLUMBLINE_AUDIT_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    trail = AuditTrail.for_project(AuditConfig(url="sqlite:///ignored.sqlite"), tmp_path)
    trail.append("reload", BOB)
    assert (tmp_path / "env.sqlite").is_file()
    assert not (tmp_path / "ignored.sqlite").exists()


def test_opened_retries_a_refused_connection_then_names_the_server_without_its_password() -> None:
    # A port nothing listens on: the connection is refused at once, every try.
    url = "postgresql+psycopg://plumbline_app:s3cret@127.0.0.1:9/plumbline"
    with pytest.raises(AuditError, match=r"127\.0\.0\.1:9/plumbline was not ready within 0\.5 s"):
        AuditTrail.opened(url, wait_s=0.5, interval_s=0.1)
    try:
        AuditTrail.opened(url, wait_s=0.5, interval_s=0.1)
    except AuditError as exc:
        assert "s3cret" not in str(exc)
    # No wait: the engine's own error, at the first refusal.
    with pytest.raises(sqlalchemy.exc.OperationalError):
        AuditTrail.opened(url)
