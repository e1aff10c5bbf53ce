"""docker-compose.yml, checked without a Docker engine: valid against the Compose
specification, and consistent with the repository and the code it starts (files it mounts and
builds, ports, commands, routes of its healthchecks, the monitoring configuration it serves).

The services themselves are started as processes in test_deploy_stack.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from support.deploy import (
    COMPOSE_FILE,
    SERVE_DOCKERFILE,
    command,
    compose_raw,
    environment,
    parse_dockerfile,
    service,
)
from support.paths import REPO, dev_tool

from plumbline.core import yamlfile

SERVICES = {"mlflow", "bootstrap", "api", "monitor", "prometheus", "alertmanager", "grafana"}
TEAMS = {"postgres", "minio", "minio-buckets"}
ONE_SHOT = {"bootstrap", "minio-buckets"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dev_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    done = _validate(COMPOSE_FILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validation above is not vacuous: one misspelt key fails it."""
    raw = yamlfile.safe_load(COMPOSE_FILE.read_text())
    raw["services"]["api"]["healthchek"] = raw["services"]["api"].pop("healthcheck")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(raw))
    done = _validate(broken)
    assert done.returncode != 0
    assert "healthchek" in done.stdout + done.stderr


def test_the_api_command_is_the_image_command_and_runs_plumbline_serve() -> None:
    """serve/app.py: the wrapper of `plumbline serve`, the command the serving tests start
    (test_entry_points.py checks that the wrapper runs it)."""
    from support.paths import APP

    argv = command(service("api"))
    dockerfile = parse_dockerfile(SERVE_DOCKERFILE)
    assert argv == dockerfile.final.all("CMD")[-1].exec_form()
    assert argv[:2] == ["python", "serve/app.py"]
    # In the image, WORKDIR /app holds serve/app.py: the repository's file, as the tests run it.
    workdir = dockerfile.final.all("WORKDIR")[-1].args
    assert ("serve/app.py", "./serve/app.py") in [
        (s, d)
        for s, d in [
            (i.args.split()[0], i.args.split()[-1])
            for i in dockerfile.final.all("COPY")
            if not i.flags
        ]
    ]
    assert workdir == "/app"
    assert REPO / argv[1] == APP
    # Every option is one serve/app.py accepts, with an accepted value.
    done = subprocess.run(
        [sys.executable, str(APP), *argv[2:], "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: plumbline serve ")
    assert "--port" in done.stdout and "--host" in done.stdout


def test_no_secret_is_committed() -> None:
    for name, svc in compose_raw()["services"].items():
        assert "env_file" not in svc, name
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key):
                assert value is None, f"{name}: {key} has a value in the compose file"
    for line in (REPO / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#") and SECRET_NAME.search(key):
            assert value == "", f".env.example gives {key} a value"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert ignored.returncode == 0, ".env must be gitignored"
