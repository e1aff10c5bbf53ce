"""The governance database on a real PostgreSQL, set up as docs/governance.md says: the owner
creates the tables and runs ``plumbline audit grant``; the services log in as a role that may
only insert and read audit records. Concurrent appends from several processes form one chain;
the application's login can neither edit nor delete a record nor prune; tampering by the
owner is named by ``plumbline audit verify``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.cli import plumbline
from support.paths import REPO
from support.postgres import Server, postgres_bin, postgres_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        postgres_bin() is None, reason="PostgreSQL is not installed (.ci/run installs it)"
    ),
]

OWNER, APP = "plumbline_owner", "plumbline_app"

APPENDER = """
import sys
from plumbline.governance.identity import Actor
from plumbline.governance.trail import AuditTrail

trail = AuditTrail(sys.argv[1])
for i in range(int(sys.argv[3])):
    trail.append("reload", Actor(sys.argv[2], "operator", "token"), {"version": str(i)})
trail.close()
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with postgres_server() as running:
        yield running


@pytest.fixture
def database(server: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database owned by OWNER, the schema's CREATE for OWNER only."""
    name = f"governance_{request.node.name.removeprefix('test_')[:40]}"
    server.sql(
        f"DROP DATABASE IF EXISTS {name}",
        f"DO $$ BEGIN CREATE ROLE {OWNER} LOGIN; EXCEPTION WHEN duplicate_object THEN END $$",
        f"DO $$ BEGIN CREATE ROLE {APP} LOGIN; EXCEPTION WHEN duplicate_object THEN END $$",
        f"CREATE DATABASE {name} OWNER {OWNER}",
    )
    server.sql(
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"ALTER SCHEMA public OWNER TO {OWNER}",
        database=name,
    )
    yield name
    server.sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    monkeypatch.delenv("PLUMBLINE_TOKEN", raising=False)
    return tmp_path


def as_login(monkeypatch: pytest.MonkeyPatch, server: Server, user: str, database: str) -> str:
    url = server.url(user, database)
    monkeypatch.setenv("PLUMBLINE_AUDIT_URL", url)
    return url


def owner_sets_up(monkeypatch: pytest.MonkeyPatch, server: Server, database: str) -> None:
    """What the owner does once: create the tables and grant the application its rights."""
    as_login(monkeypatch, server, OWNER, database)
    code, out, err = plumbline("audit", "grant", APP)
    assert code == 0, err
    assert f"GRANT SELECT, INSERT ON audit_records TO {APP};" in out
    assert f"REVOKE ALL ON audit_records, users, tokens FROM {APP};" in out


def test_the_application_login_appends_from_many_processes_and_cannot_rewrite(
    server: Server, database: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    owner_sets_up(monkeypatch, server, database)
    app_url = as_login(monkeypatch, server, APP, database)

    # Users and tokens work through the application's login (it creates no table).
    code, out, err = plumbline("users", "add", "ops-admin", "--role", "admin")
    assert code == 0, err
    admin = next(line for line in out.splitlines() if line.startswith("plb_"))
    monkeypatch.setenv("PLUMBLINE_TOKEN", admin)
    code, out, err = plumbline("users", "add", "alice", "--role", "operator")
    assert code == 0, err
    alice_id = next(line for line in out.splitlines() if line.startswith("plb_")).split("_")[1]
    code, out, err = plumbline("users", "revoke", alice_id)
    assert code == 0 and f"revoked token {alice_id} of alice" in out, err

    # Three processes append at once; their records form one gap-free chain.
    per_process = 60
    writers = [
        subprocess.Popen([sys.executable, "-c", APPENDER, app_url, f"writer-{i}", str(per_process)])
        for i in range(3)
    ]
    assert [w.wait(timeout=300) for w in writers] == [0, 0, 0]
    code, out, err = plumbline("audit", "verify")
    assert code == 0, err
    before = 3  # user_add, user_add, token_revoke
    assert f"verified {before + 3 * per_process} records" in out

    # The login may read and insert records, never change or delete one.
    with psycopg.connect(server.url(APP, database).replace("+psycopg", "")) as conn:
        for statement in (
            "UPDATE audit_records SET comment = 'edited' WHERE seq = 5",
            "DELETE FROM audit_records WHERE seq = 5",
            "TRUNCATE audit_records",
            "DROP TABLE audit_records",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]
            conn.rollback()


def test_the_owner_prunes_and_verify_names_a_tampered_record(
    server: Server, database: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plumbline.governance import trail as trail_module
    from plumbline.governance.identity import Actor

    owner_sets_up(monkeypatch, server, database)
    app_url = as_login(monkeypatch, server, APP, database)
    operator = Actor("ops", "operator", "token")
    trail = trail_module.AuditTrail(app_url)
    with monkeypatch.context() as past:
        past.setattr(trail_module, "now_utc", lambda: datetime(2025, 1, 1, tzinfo=UTC))
        for version in "1234":
            trail.append("reload", operator, {"version": version})
    for version in "56":
        trail.append("reload", operator, {"version": version})
    trail.close()

    # Pruning needs the owner: the application's login gets a clear refusal, and no change.
    code, _, err = plumbline("audit", "prune", "--retain-days", "30")
    assert code == 1 and "permission denied to delete audit records" in err
    code, out, err = plumbline("audit", "verify")
    assert code == 0 and "verified 6 records" in out, err

    as_login(monkeypatch, server, OWNER, database)
    code, out, err = plumbline("audit", "prune", "--retain-days", "30")
    assert code == 0 and "removed records 1..4 (4), older than 30 days; checkpoint 7" in out, err
    code, out, err = plumbline("audit", "verify")
    assert code == 0 and "verified 3 records" in out, err

    # The owner can still write the table directly: verify names what was edited or deleted.
    server.sql(
        "UPDATE audit_records SET comment = 'nothing to see' WHERE seq = 6",
        database=database,
        user=OWNER,
    )
    code, _, err = plumbline("audit", "verify")
    assert code == 1 and "record 6" in err
    server.sql("DELETE FROM audit_records WHERE seq = 6", database=database, user=OWNER)
    code, _, err = plumbline("audit", "verify")
    assert code == 1 and "record 7" in err


def test_the_teams_setup_makes_its_governance_database_as_compose_does(
    server: Server, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/postgres's init script (as PostgreSQL's image runs it on the first start), then
    the `governance-db` one-shot's command and URL from docker-compose.teams.yml, then a service
    logged in as plumbline_app with .env.example's URL: it provisions Alertmanager's token and
    the chain verifies; it cannot create a table of its own."""
    import psycopg
    from support.deploy import command, environment, service

    server.sql("DROP DATABASE IF EXISTS plumbline", "DROP ROLE IF EXISTS mlflow")
    server.sql(f"DROP ROLE IF EXISTS {APP}", "CREATE ROLE mlflow LOGIN SUPERUSER")
    env = dict(
        PGHOST="127.0.0.1",
        PGPORT=str(server.port),
        POSTGRES_USER="mlflow",
        POSTGRES_DB="postgres",
        PLUMBLINE_DB_PASSWORD="app-secret",
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
    )
    for script in sorted((REPO / "deploy/postgres").glob("*.sh")):
        done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    def localised(url: str, **variables: str) -> str:
        for name, value in variables.items():
            url = url.replace(f"${{{name}:-}}", value).replace(f"${{{name}}}", value)
        return url.replace("@postgres:5432/", f"@127.0.0.1:{server.port}/").replace(
            "postgresql://", "postgresql+psycopg://"
        )

    owner = environment(service("governance-db", teams=True))["PLUMBLINE_AUDIT_URL"]
    assert owner is not None
    monkeypatch.setenv("PLUMBLINE_AUDIT_URL", localised(owner, POSTGRES_PASSWORD="pw"))
    argv = command(service("governance-db", teams=True))
    code, out, err = plumbline(*argv[1:])
    assert code == 0 and f"{APP} may now only insert and read audit records" in err + out

    example = (REPO / ".env.example").read_text()
    (app_line,) = [line for line in example.splitlines() if "PLUMBLINE_AUDIT_URL=" in line]
    app_url = localised(app_line.split("=", 1)[1], PLUMBLINE_DB_PASSWORD="app-secret")
    assert f"://{APP}:" in app_url
    monkeypatch.setenv("PLUMBLINE_AUDIT_URL", app_url)
    token_file = project / "secrets" / "monitor-token"
    for outcome in ("created", "kept"):
        code, out, err = plumbline(
            "users", "ensure", "alertmanager", "--role", "operator", "--token-file", str(token_file)
        )
        assert code == 0 and outcome in out + err, err
    code, out, err = plumbline("audit", "verify")
    assert code == 0 and "verified 1 records" in out, err
    with (
        psycopg.connect(app_url.replace("+psycopg", "")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TABLE audit_copy (seq int)")


def test_the_application_login_waits_for_the_owners_tables_and_names_what_it_waited_for(
    server: Server, database: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What bootstrap meets in the teams set-up when the engine starts it before the one-shot
    `governance-db`: the login may not create the tables, so it waits until they exist."""
    import threading

    from plumbline.governance.trail import AuditError, AuditTrail

    app_url = server.url(APP, database)
    with pytest.raises(AuditError, match=r"was not ready within 1 s .*permission denied"):
        AuditTrail.opened(app_url, wait_s=1, interval_s=0.2)

    def owner_later() -> None:
        time.sleep(2)
        owner_sets_up(monkeypatch, server, database)

    owner = threading.Thread(target=owner_later)
    started = time.monotonic()
    owner.start()
    trail = AuditTrail.opened(app_url, wait_s=60, interval_s=0.2)
    owner.join()
    assert time.monotonic() - started >= 2
    assert trail.verify().ok
    trail.close()
