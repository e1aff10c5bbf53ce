"""The two Dockerfiles, checked without a Docker engine: hadolint, then what hadolint does not
know about this project (non-root, pinned bases, health checks on real routes, no secrets,
every file they copy in the build context, only serving dependencies in the serving image).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.deploy import (
    PIPELINE_DOCKERFILE,
    SERVE_DOCKERFILE,
    Dockerfile,
    command,
    copy_sources,
    ignored,
    parse_dockerfile,
    serve_image_extras,
    service,
    slim_venv,
)
from support.paths import REPO, dev_tool, tracked_files

DOCKERFILES = [SERVE_DOCKERFILE, PIPELINE_DOCKERFILE]
IDS = ["serve", "pipeline"]
PIPELINE_ONLY = {
    "dvc",
    "great-expectations",
    "matplotlib",
    "mlflow",
    "alembic",
    "flask",
    "gunicorn",
}


@pytest.fixture(params=DOCKERFILES, ids=IDS)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse_dockerfile(request.param)


def test_hadolint_finds_nothing(dockerfile: Dockerfile) -> None:
    hadolint = dev_tool("hadolint")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(dockerfile.path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_latest_base_and_root(tmp_path: Path) -> None:
    """The lint above is not vacuous."""
    hadolint = dev_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\n")
    done = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # "latest"


def test_every_copied_file_is_in_the_build_context(dockerfile: Dockerfile) -> None:
    """What each COPY names exists, and its .dockerignore lets every tracked file of it in."""
    ignore = dockerfile.ignore_file()
    files = tracked_files()
    for source, _ in copy_sources(dockerfile):
        path = REPO / source
        assert path.exists(), f"{dockerfile.path.name}: COPY {source}: not in the repository"
        inside = [f for f in files if f == source or f.startswith(source.rstrip("/") + "/")]
        assert inside, f"COPY {source}: no tracked file"
        left_out = [f for f in inside if ignored(f, ignore)]
        assert not left_out, f"{ignore.name} leaves out {left_out[:5]} of COPY {source}"
    # And nothing big or private that is not copied gets sent along.
    for rel in (
        ".venv/bin/python",
        "mlartifacts/1/x",
        "data/interim/valid.parquet",
        ".git/HEAD",
        "tests/conftest.py",
    ):
        assert ignored(rel, ignore), rel


def test_the_serving_code_loads_a_model_with_only_the_serving_dependencies(tmp_path: Path) -> None:
    """In a venv holding only what `pip install ".[serve]"` installs: import the server, read
    the settings, load and score a real model artifact, reach the MLflow client."""
    from support.serve import artifacts

    python = slim_venv(tmp_path / "venv", serve_image_extras())
    model = artifacts().model
    script = f"""
import dataclasses
import sys
from pathlib import Path
from plumbline.serving.server import PlumblineServer, build_settings
from plumbline.serving.source import ModelSource
settings = build_settings()
where = dataclasses.replace(settings.source_settings(), fallback=Path({str(model)!r}))
served = ModelSource(where, settings.contract, settings.features).load_local()
from plumbline.promotion.registry import Registry
Registry("m", "http://127.0.0.1:9")
import plumbline.cli.main  # serve/app.py runs `plumbline serve`: every command module loads
for name in ("dvc", "great_expectations", "matplotlib"):
    try:
        __import__(name)
    except ImportError:
        continue
    sys.exit(f"{{name}} is importable in the serving venv")
print("served", served.version, served.scorer.kind)
"""
    done = subprocess.run(
        [str(python), "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "PLUMBLINE_ROOT": str(REPO),
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("served local-")
    assert command(service("api"))[0] == "python"
