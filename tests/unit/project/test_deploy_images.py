"""The two Dockerfiles, checked without a Docker engine: hadolint, then what hadolint does not
know about this project (non-root, pinned bases, health checks on real routes, no secrets,
every file they copy in the build context, only serving dependencies in the serving image).
"""

from __future__ import annotations

import re
import sys
from urllib.parse import urlparse

import pytest
from support.deploy import (
    PIPELINE_DOCKERFILE,
    SERVE_DOCKERFILE,
    Dockerfile,
    copy_sources,
    dependency_closure,
    healthcheck_url,
    ignored,
    parse_dockerfile,
    service,
)
from support.paths import REPO

from plumbline.core import yamlfile

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


def test_bases_are_slim_and_pinned_to_a_release(dockerfile: Dockerfile) -> None:
    names = {s.name for s in dockerfile.stages if s.name}
    bases = [dockerfile.resolve(s.base) for s in dockerfile.stages if s.base not in names]
    assert len(dockerfile.stages) >= 2, "multi-stage: the build tools stay out of the image"
    for base in bases:
        image, _, tag = base.rpartition(":")
        assert image == "python", base
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-bookworm", tag), base
    assert len(set(bases)) == 1, "build and runtime stages share the interpreter"
    # The interpreter line the tests run on here.
    assert bases[0].split(":")[1].startswith(".".join(map(str, sys.version_info[:2])) + ".")


def test_the_final_stage_runs_as_an_unprivileged_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.all("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    assert int(user) >= 1000
    assert f"--uid {user}" in " ".join(i.args for i in dockerfile.final.all("RUN"))


def test_signals_reach_the_process(dockerfile: Dockerfile) -> None:
    """Exec form everywhere; tini as PID 1 forwards SIGTERM (docker stop, Kubernetes)."""
    entrypoint = dockerfile.final.all("ENTRYPOINT")[-1].exec_form()
    assert entrypoint == ["tini", "--"]
    assert dockerfile.final.all("CMD")[-1].exec_form() is not None
    stop = dockerfile.final.all("STOPSIGNAL")
    assert not stop or stop[-1].args == "SIGTERM"


def test_the_serving_image_is_healthy_only_when_ready() -> None:
    from plumbline.serving.server import ROUTES

    final = parse_dockerfile(SERVE_DOCKERFILE).final
    check = final.all("HEALTHCHECK")[-1]
    url = urlparse(healthcheck_url({"healthcheck": {"test": check.args}}) or "")
    cmd = final.all("CMD")[-1].exec_form() or []
    assert url.path == "/ready" and url.path in ROUTES
    assert url.port == int(cmd[cmd.index("--port") + 1])
    assert check.args.startswith("--interval=") or "CMD" in check.args


def test_the_pipeline_image_leaves_health_to_each_command() -> None:
    """One image, several commands: no single check fits; compose gives each its own."""
    final = parse_dockerfile(PIPELINE_DOCKERFILE).final
    assert final.all("HEALTHCHECK")[-1].args == "NONE"
    for name in ("mlflow", "monitor"):
        assert healthcheck_url(service(name)), name


def test_no_secret_goes_into_an_image(dockerfile: Dockerfile) -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
    for stage in dockerfile.stages:
        for key in [*stage.env(), *(i.args.partition("=")[0] for i in stage.all("ARG"))]:
            assert not secret.search(key), f"{dockerfile.path.name}: {key}"
    for source, _ in copy_sources(dockerfile):
        assert not source.startswith(".env"), source
    assert ignored(".env", dockerfile.ignore_file())
    assert ignored("mlflow.db", dockerfile.ignore_file())


def test_the_serving_image_installs_only_the_serving_dependencies() -> None:
    build = parse_dockerfile(SERVE_DOCKERFILE).stages[0]
    runs = " ".join(i.args for i in build.all("RUN"))
    # The extras the build argument names: by default the serving extra and the PostgreSQL
    # driver for a governance database on PostgreSQL; `boosting` on request.
    assert '".[${SERVE_EXTRAS}]"' in runs
    (extras,) = [i.args for i in build.all("ARG") if i.args.startswith("SERVE_EXTRAS=")]
    assert extras == "SERVE_EXTRAS=serve,postgres"
    assert "--constraint requirements.lock" in runs
    closure = dependency_closure("plumbline", ("serve", "postgres"))
    assert not closure & PIPELINE_ONLY, sorted(closure & PIPELINE_ONLY)
    assert {"litserve", "mlflow-skinny", "prometheus-client", "scikit-learn", "skops"} <= closure
    with_boosting = dependency_closure("plumbline", ("serve", "postgres", "boosting"))
    assert not with_boosting & PIPELINE_ONLY, sorted(with_boosting & PIPELINE_ONLY)
    assert {"xgboost-cpu", "lightgbm"} <= with_boosting
    pipeline = " ".join(i.args for i in parse_dockerfile(PIPELINE_DOCKERFILE).stages[0].all("RUN"))
    assert re.findall(r'"\.\[([a-z,]+)\]"', pipeline) == ["pipeline,stores"]
    assert {"dvc", "mlflow", "great-expectations"} <= dependency_closure(
        "plumbline", ("pipeline", "stores")
    )


def test_the_pipeline_image_has_every_input_that_dvc_yaml_names() -> None:
    """bootstrap runs `dvc repro` on the image's copy of the project: every dependency of
    every stage that is not a pipeline output must be in it."""

    from plumbline.monitoring.settings import load_params

    params = load_params(REPO / "params.yaml")
    spec = yamlfile.safe_load((REPO / "dvc.yaml").read_text())
    outputs = {
        next(iter(o)) if isinstance(o, dict) else o
        for stage in spec["stages"].values()
        for kind in ("outs", "metrics", "plots")
        for o in stage.get(kind, [])
    }
    final = parse_dockerfile(PIPELINE_DOCKERFILE).final
    copied = [
        s
        for ins in final.instructions
        if ins.keyword == "COPY" and not ins.flags
        for s in ins.args.split()[:-1]
    ]
    for stage in spec["stages"].values():
        for dep in stage.get("deps", []):
            dep = dep.replace("${data.contract}", str(params.data.contract))
            if dep in outputs:
                continue
            assert any(dep == c or dep.startswith(c.rstrip("/") + "/") for c in copied), dep
    for needed in ("params.yaml", "dvc.yaml", "dvc.lock", ".dvc/config"):
        assert needed in copied, needed
