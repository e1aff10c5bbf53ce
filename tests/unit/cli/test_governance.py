"""``plumbline users`` and ``plumbline audit`` in a throwaway project: the first admin needs no
token, every later change needs an admin's; every change is an audit record; ``audit verify``
fails naming the record once a row is edited."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from support.cli import plumbline
from support.paths import REPO

DB = Path("logs/governance/governance.sqlite")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    monkeypatch.delenv("PLUMBLINE_TOKEN", raising=False)
    monkeypatch.delenv("PLUMBLINE_AUDIT_URL", raising=False)
    return tmp_path


def token_of(out: str) -> str:
    (token,) = [line for line in out.splitlines() if line.startswith("plb_")]
    return token


def test_users_need_an_admin_token_once_the_first_admin_exists(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = plumbline("users", "add", "bob", "--role", "viewer")
    assert code == 1 and "the first user must be an admin" in err

    code, out, _ = plumbline("users", "add", "root-admin", "--role", "admin")
    assert code == 0
    admin = token_of(out)
    assert "shown only now" in out
    assert (project / DB).is_file()

    # Without a token, or with a lower role's, nobody else may manage users.
    code, _, err = plumbline("users", "add", "alice", "--role", "approver")
    assert code == 1 and "PLUMBLINE_TOKEN" in err
    monkeypatch.setenv("PLUMBLINE_TOKEN", admin)
    code, out, _ = plumbline("users", "add", "alice", "--role", "approver", "--expires-days", "30")
    assert code == 0
    alice = token_of(out)

    monkeypatch.setenv("PLUMBLINE_TOKEN", alice)
    code, _, err = plumbline("users", "list")
    assert code == 1 and "role admin needed; alice is approver" in err
    monkeypatch.setenv("PLUMBLINE_TOKEN", "plb_forged_token")
    code, _, err = plumbline("users", "list")
    assert code == 1 and "unknown, expired or revoked" in err

    monkeypatch.setenv("PLUMBLINE_TOKEN", admin)
    code, out, _ = plumbline("users", "token", "alice")
    assert code == 0
    alice_id = token_of(alice).split("_")[1]
    code, out, _ = plumbline("users", "revoke", alice_id)
    assert code == 0 and f"revoked token {alice_id} of alice" in out
    code, out, _ = plumbline("users", "role", "alice", "admin")
    assert code == 0 and "alice: approver -> admin" in out
    code, out, _ = plumbline("users", "list")
    assert code == 0 and "alice" in out and "root-admin" in out and alice not in out

    code, out, _ = plumbline("audit", "show")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["seq", "time", "(UTC)", "actor"]
    actions = [line.split()[5] for line in lines[1:-1]]
    assert actions == [
        "user_add",
        "refused",
        "user_add",
        "refused",
        "token_add",
        "token_revoke",
        "role_change",
    ]
    assert "(local)" in lines[1] and "root-admin (token)" in lines[3]
    code, out, _ = plumbline("audit", "show", "--last", "2")
    assert code == 0 and len(out.splitlines()) == 2 + 1 + 1  # header, 2 rows, summary


def test_audit_verify_export_and_tampering(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plumbline("users", "add", "root-admin", "--role", "admin")[0] == 0
    code, out, _ = plumbline("audit", "verify")
    assert code == 0 and "verified 1 records" in out

    export = project / "out/audit.jsonl"
    code, out, _ = plumbline("audit", "export", "--format", "jsonl", "--output", str(export))
    assert code == 0
    (line,) = export.read_text().splitlines()
    assert json.loads(line)["action"] == "user_add"
    code, out, err = plumbline("audit", "export", "--format", "csv")
    assert code == 0 and out.startswith("seq,at,actor") and "exported 1 records" in err

    with sqlite3.connect(project / DB) as db:
        db.execute("UPDATE audit_records SET actor = 'someone-else' WHERE seq = 1")
    code, out, err = plumbline("audit", "verify")
    assert code == 1
    assert "record 1: hash mismatch" in err


def test_audit_prune_needs_a_named_admin_and_keeps_the_chain_green(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = plumbline("users", "add", "root-admin", "--role", "admin")
    code, _, err = plumbline("audit", "prune")
    assert code == 1 and "PLUMBLINE_TOKEN" in err
    monkeypatch.setenv("PLUMBLINE_TOKEN", token_of(out))
    code, out, _ = plumbline("audit", "prune")
    assert code == 0 and "nothing older than 760 days" in out
    code, _, err = plumbline("audit", "prune", "--retain-days", "0")
    assert code == 1 and "at least 1" in err
    code, out, _ = plumbline("audit", "verify")
    assert code == 0 and "verified 2 records" in out  # user_add, refused
