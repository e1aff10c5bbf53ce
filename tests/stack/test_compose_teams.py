"""The teams set-up in real containers: docker-compose.yml with docker-compose.teams.yml, its
variables from .env.example's teams block, as a user without a container registry runs it:

    podman-compose -f docker-compose.yml -f docker-compose.teams.yml \\
        -f deploy/podman/compose.standins.yml -f deploy/podman/compose.teams-standins.yml \\
        up -d postgres governance-db mlflow bootstrap api

PostgreSQL is a Debian-built stand-in for the official image (PostgreSQL 15 for 16; the
override file changes its image name only). docker-compose.s3.yml is not started: MinIO has no
Debian package, so MLflow keeps its artifacts in its volume.

The tests run in order on one stack (after test_compose_stack.py's, which publishes the same
ports): up, MLflow's registry and the audit trail in PostgreSQL, serve, down with volumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pandas as pd
import pytest
import requests
from support.paths import REPO
from support.stack import TEAMS_COMPOSE_FILES, Engine, HealthDriver, taken_ports, wait_for

from plumbline.core import yamlfile

pytestmark = pytest.mark.timeout(2400)

PROJECT = "plumblineteams"
SERVICES = ("postgres", "governance-db", "mlflow", "bootstrap", "api")
API = "http://127.0.0.1:8000"
# What a user puts in .env for the two passwords; the rest comes from .env.example.
PASSWORDS = {"POSTGRES_PASSWORD": "stack-owner-secret", "PLUMBLINE_DB_PASSWORD": "stack-app-secret"}


def teams_env() -> dict[str, str]:
    """.env.example's teams block, uncommented, with the passwords filled in."""
    lines = (REPO / ".env.example").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- teams:"))
    env = dict(PASSWORDS)
    for line in lines[start + 1 :]:
        if line.startswith("# ---"):
            break
        name, sep, value = line.removeprefix("#").partition("=")
        if sep and name.isupper() and name not in PASSWORDS:
            for var, secret in PASSWORDS.items():
                value = value.replace(f"${{{var}}}", secret)
            env[name] = value
    assert set(env) >= {"MLFLOW_BACKEND_STORE_URI", "PLUMBLINE_AUDIT_URL"}, env
    return env


@pytest.fixture(scope="module")
def teams(images: dict[str, int]) -> Iterator[Engine]:
    engine = Engine(PROJECT, files=TEAMS_COMPOSE_FILES, env=teams_env())
    taken = taken_ports(5000, 8000)
    assert not taken, f"127.0.0.1 ports {taken} are taken: the stack publishes its ports there"
    engine.cleanup()
    driver = HealthDriver(engine)
    driver.start()
    try:
        started = time.monotonic()
        done = engine.compose("up", "-d", *SERVICES)
        assert done.returncode == 0, "\n".join(engine.log)
        assert engine.wait_exited("bootstrap", 900) == 0, engine.logs("bootstrap")
        print(f"teams up, bootstrap done: {time.monotonic() - started:.0f} s")
        yield engine
    finally:
        driver.stop()
        engine.cleanup()


def psql(engine: Engine, database: str, query: str) -> list[str]:
    """Rows of ``query`` as the database's owner, over the container's own socket."""
    out = engine.exec(
        "postgres", "psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--username", "mlflow",
        "--dbname", database, "--tuples-only", "--no-align", "--command", query,
    )  # fmt: skip
    return out.split()


def test_governance_db_made_the_tables_and_bootstrap_waited_for_them(teams: Engine) -> None:
    assert teams.exit_code("governance-db") == 0, teams.logs("governance-db")
    assert "plumbline_app may now only insert and read audit records" in teams.logs("governance-db")
    assert "champion is version 1; the API can serve it" in teams.logs("bootstrap")
    tables = psql(teams, "plumbline", "SELECT tablename FROM pg_tables WHERE schemaname='public'")
    assert {"audit_records", "users", "tokens"} <= set(tables)


def test_mlflow_keeps_its_runs_and_registry_in_postgresql(teams: Engine) -> None:
    name = yamlfile.safe_load((REPO / "params.yaml").read_text())["mlflow"]["model_name"]
    versions = psql(teams, "mlflow", f"SELECT version FROM model_versions WHERE name = '{name}'")
    assert versions == ["1"]
    alias = psql(
        teams,
        "mlflow",
        f"SELECT alias || '=' || version FROM registered_model_aliases WHERE name = '{name}'",
    )
    assert "champion=1" in alias
    (runs,) = psql(teams, "mlflow", "SELECT count(*) FROM runs")
    assert int(runs) >= 1
    # The server answers from that database.
    answer = requests.get(
        "http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias",
        params={"name": name, "alias": "champion"},
        timeout=10,
    )
    assert answer.json()["model_version"]["version"] == "1"


def test_the_audit_trail_is_in_postgresql_and_its_login_cannot_rewrite_it(teams: Engine) -> None:
    actions = psql(teams, "plumbline", "SELECT action FROM audit_records ORDER BY seq")
    assert {"register", "promote"} <= set(actions), actions
    # The chain verifies, read through the services' own login.
    url = teams.env["PLUMBLINE_AUDIT_URL"]
    verified = teams.podman(
        "exec", "-e", "PLUMBLINE_ROOT=/opt/plumbline", "-e", f"PLUMBLINE_AUDIT_URL={url}",
        teams.container("mlflow"), "plumbline", "audit", "verify",
    )  # fmt: skip
    assert f"verified {len(actions)} records" in verified
    # That login may insert and read, never change or delete a record.
    for statement in (
        "UPDATE audit_records SET comment = 'edited'",
        "DELETE FROM audit_records",
    ):
        script = (
            "psql --no-psqlrc --host 127.0.0.1 --username plumbline_app --dbname plumbline "
            f'--command "{statement}" 2>&1; echo "exit $?"'
        )
        denied = teams.podman(
            "exec", "-e", f"PGPASSWORD={PASSWORDS['PLUMBLINE_DB_PASSWORD']}",
            teams.container("postgres"), "sh", "-c", script,
        )  # fmt: skip
        assert "permission denied for table audit_records" in denied, denied
        assert denied.rstrip().endswith("exit 1"), denied
    after = psql(teams, "plumbline", "SELECT action FROM audit_records ORDER BY seq")
    assert after == actions


def test_the_api_serves_the_champion_registered_on_postgresql(teams: Engine) -> None:
    wait_for("the API is healthy", lambda: teams.health("api") == "healthy", 300, teams)

    def serves_champion() -> bool:
        model = requests.get(f"{API}/ready", timeout=5).json().get("model") or {}
        return bool(model.get("source") == "registry" and model.get("model_version") == "1")

    wait_for("the API serves the registry's champion", serves_champion, 120, teams)
    rows = pd.read_csv(REPO / "data/raw/bank-additional.csv", sep=";").head(3)
    body = json.loads(rows.drop(columns=["y", "duration"]).to_json(orient="records"))
    answer = requests.post(f"{API}/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert [p["model_version"] for p in answer.json()] == ["1"] * 3


def test_down_with_volumes_leaves_nothing_of_the_teams_set_up(teams: Engine) -> None:
    done = teams.compose("down", "-v", "--timeout", "60")
    assert done.returncode == 0, "\n".join(teams.log)
    assert teams.leftovers() == {"containers": [], "volumes": [], "networks": [], "pods": []}
