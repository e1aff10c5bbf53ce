"""docker-compose.yml's stack, run as processes: no Docker engine here, so every service is
started as the process its container would run, with the command and environment that the
compose file and the Dockerfiles give it. Only what a container changes is changed: ports become
free loopback ports, ``0.0.0.0`` becomes ``127.0.0.1``, service names become 127.0.0.1 and
container paths become directories of a temporary "container filesystem" (named volumes are
shared directories, as in Docker; files the images copy are copied the same way).

* ``mlflow``: the tracking server on SQLite with proxied artifacts (the compose default);
* ``bootstrap``: ``plumbline bootstrap``: the real pipeline on the real data (``dvc repro``),
  gate and promote, all over HTTP; run twice, as two ``docker compose up`` would;
* ``api``: ``python serve/app.py`` (``plumbline serve``) loading ``@champion`` from MLflow over
  HTTP, with an interpreter that has only what ``pip install ".[serve]"`` installs (the
  serving image);
* ``monitor``: ``plumbline monitor``;
* ``prometheus``: Debian's Prometheus with monitoring/prometheus.yml, scraping api and monitor
  (scrape interval shortened to 1 s).

Checked: a champion after bootstrap, predictions equal to the trained model's, Prometheus's
HTTP API showing the scrape, MLflow's Host allow-list, and a clean SIGTERM shutdown.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from support.deploy import (
    PIPELINE_DOCKERFILE,
    SERVE_DOCKERFILE,
    Dockerfile,
    command,
    compose,
    environment,
    mounts,
    parse_dockerfile,
    serve_image_extras,
    service,
    slim_venv,
)
from support.net import free_port
from support.paths import REPO
from support.serve import records

from plumbline.core import yamlfile

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
if PROMETHEUS is None and not os.environ.get("CI"):
    pytest.skip(
        "Prometheus is not installed (Debian package `prometheus`); CI must have it",
        allow_module_level=True,
    )

RUN = ("mlflow", "api", "monitor", "prometheus")  # long-running services started here
LISTEN = {"mlflow": 5000, "api": 8000, "monitor": 8001, "prometheus": 9090}
IMAGES = {
    "api": SERVE_DOCKERFILE,
    "mlflow": PIPELINE_DOCKERFILE,
    "bootstrap": PIPELINE_DOCKERFILE,
    "monitor": PIPELINE_DOCKERFILE,
}
BIN = Path(sys.executable).parent


def _container_paths() -> re.Pattern[str]:
    """Absolute paths inside the containers: mount points, working and ENV directories."""
    found: set[str] = set()
    for svc in compose()["services"].values():
        found.update(m.target for m in mounts(svc))
    for path in (SERVE_DOCKERFILE, PIPELINE_DOCKERFILE):
        final = parse_dockerfile(path).final
        found.update(i.args for i in final.all("WORKDIR"))
        found.update(v for k, v in final.env().items() if k != "PATH" and v.startswith("/"))
    alternatives = "|".join(re.escape(p) for p in sorted(found, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])(?:{alternatives})(?=/|$)")


CONTAINER_PATHS = _container_paths()


@dataclass
class Stack:
    """The container filesystem, the port map and the processes."""

    tmp: Path
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in RUN})
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def fs(self) -> Path:
        return self.tmp / "fs"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    # --- turning a container's view into this machine's -------------------------------------

    def path(self, container_path: str) -> Path:
        return self.fs / container_path.lstrip("/")

    def localize(self, text: str, name: str | None = None) -> str:
        """Ports, service names, 0.0.0.0 and absolute container paths, for service ``name``."""
        if name in self.ports:
            # The service's own port, also in "host:port" lists (MLflow's --allowed-hosts).
            text = re.sub(rf"(?<=:){LISTEN[name]}\b", str(self.ports[name]), text)
        for svc, port in LISTEN.items():
            text = text.replace(f"{svc}:{port}", f"127.0.0.1:{self.ports[svc]}")
        text = text.replace("localhost:9090", f"127.0.0.1:{self.ports['prometheus']}")
        text = text.replace("0.0.0.0", "127.0.0.1")
        return CONTAINER_PATHS.sub(lambda m: str(self.path(m.group(0))), text)

    def argv(self, name: str, python: str = sys.executable) -> list[str]:
        argv = command(service(name))
        out = []
        for i, arg in enumerate(argv):
            if i > 0 and argv[i - 1] == "--port":
                out.append(str(self.ports[name]))
            else:
                out.append(self.localize(arg, name))
        if out[0] == "python":
            out[0] = python
        elif (BIN / out[0]).exists():
            out[0] = str(BIN / out[0])
        return out

    def env(self, name: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "PLUMBLINE_ROOT",
                "MLFLOW_TRACKING_URI",
                "PROMETHEUS_MULTIPROC_DIR",
                "PLUMBLINE_ADMIN_TOKEN",
                "PLUMBLINE_MONITOR_TOKEN",
            )
        }
        if name in IMAGES:
            for key, value in parse_dockerfile(IMAGES[name]).final.env().items():
                if key != "PATH":
                    env[key] = self.localize(value)
        for key, given in environment(service(name)).items():
            if given is not None:
                env[key] = self.localize(given)
        return env

    def workdir(self, name: str) -> Path:
        final = parse_dockerfile(IMAGES[name]).final
        return self.path(final.all("WORKDIR")[-1].args)

    # --- processes --------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        self.logs[name] = self.tmp / f"{name}.log"
        with self.logs[name].open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")[-6000:]

    def wait(self, name: str, path: str, timeout: float = 120) -> requests.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise AssertionError(
                    f"{name} exited ({self.procs[name].returncode}):\n{self.log(name)}"
                )
            with contextlib.suppress(requests.RequestException):
                response = requests.get(self.url(name) + path, timeout=3)
                if response.status_code == 200:
                    return response
            time.sleep(0.2)
        raise AssertionError(f"{name} {path} not 200 in {timeout}s:\n{self.log(name)}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for proc in self.procs.values():  # children that outlived their parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def lay_out_image(stack: Stack, dockerfile: Dockerfile) -> None:
    """What the final stage COPYs from the build context, where the image has it."""
    workdir = "/"
    for ins in dockerfile.final.instructions:
        if ins.keyword == "WORKDIR":
            workdir = ins.args if ins.args.startswith("/") else f"{workdir}/{ins.args}"
        if ins.keyword != "COPY" or "from" in ins.flags:
            continue
        *sources, dest = ins.args.split()
        target = Path(dest if dest.startswith("/") else f"{workdir}/{dest}")
        for source in sources:
            src = REPO / source
            into = stack.path(str(target))
            if dest.endswith("/") or len(sources) > 1:
                into = into / src.name
            if src.is_dir():
                shutil.copytree(
                    src, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, into)


def mount_volumes(stack: Stack) -> None:
    """Each named volume is one directory, linked at every path a service mounts it on;
    read-only bind mounts of configuration are copied (Prometheus's is rewritten below)."""
    for name in ("mlflow", "bootstrap", "api", "monitor", "prometheus"):
        for mount in mounts(service(name)):
            where = stack.path(mount.target)
            if where.is_symlink() or where.exists():
                continue
            where.parent.mkdir(parents=True, exist_ok=True)
            if mount.bind:
                shutil.copytree(REPO / mount.source, where)
                continue
            volume = stack.tmp / "volumes" / mount.source
            volume.mkdir(parents=True, exist_ok=True)
            where.symlink_to(volume, target_is_directory=True)


def prometheus_config(stack: Stack) -> None:
    flag = next(a for a in command(service("prometheus")) if a.startswith("--config.file="))
    path = stack.path(flag.partition("=")[2])
    config = yamlfile.safe_load(path.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    text = stack.localize(yaml.safe_dump(config, sort_keys=False))
    path.write_text(text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"))
    lay_out_image(stack, parse_dockerfile(SERVE_DOCKERFILE))
    lay_out_image(stack, parse_dockerfile(PIPELINE_DOCKERFILE))
    mount_volumes(stack)
    prometheus_config(stack)
    try:
        stack.start("mlflow", stack.argv("mlflow"), stack.workdir("mlflow"))
        stack.wait("mlflow", "/health", timeout=180)
        yield stack
    finally:
        stack.stop_all()


def bootstrap(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        stack.argv("bootstrap"),
        cwd=stack.workdir("bootstrap"),
        env=stack.env("bootstrap"),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def bootstrapped(stack: Stack) -> tuple[subprocess.CompletedProcess[str], ...]:
    first = bootstrap(stack)
    assert first.returncode == 0, first.stdout + first.stderr[-6000:]
    second = bootstrap(stack)
    assert second.returncode == 0, second.stdout + second.stderr[-6000:]
    return first, second


@pytest.fixture(scope="module")
def running(stack: Stack, bootstrapped: Any, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """api (with only the serving dependencies), monitor and Prometheus, once bootstrap is done
    (the compose file's depends_on)."""
    python = slim_venv(tmp_path_factory.mktemp("serve-venv"), serve_image_extras())
    stack.start("api", stack.argv("api", python=str(python)), stack.workdir("api"))
    stack.start("monitor", stack.argv("monitor"), stack.workdir("monitor"))
    assert PROMETHEUS, "CI must install Debian's prometheus"
    stack.start("prometheus", [PROMETHEUS, *stack.argv("prometheus")], stack.tmp)
    stack.wait("api", "/ready", timeout=180)
    stack.wait("monitor", "/health", timeout=180)
    stack.wait("prometheus", "/-/ready", timeout=60)
    return stack


def champion(stack: Stack) -> str:
    from mlflow import MlflowClient

    from plumbline.monitoring.settings import load_params

    name = load_params(REPO / "params.yaml").mlflow.model_name
    client = MlflowClient(tracking_uri=stack.url("mlflow"), registry_uri=stack.url("mlflow"))
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_bootstrap_gives_a_new_registry_a_champion_and_a_second_run_changes_nothing(
    stack: Stack, bootstrapped: tuple[subprocess.CompletedProcess[str], ...]
) -> None:
    first, second = bootstrapped
    assert "bootstrap: champion is version 1; the API can serve it" in first.stdout
    assert "Running stage 'train'" in first.stdout + first.stderr
    assert "champion -> 1 (was none)" in first.stdout + first.stderr
    # As a second `docker compose up`: nothing to reproduce, the same version found again.
    assert "Data and pipelines are up to date." in second.stdout + second.stderr
    assert "found 'plumbline-classifier' version 1" in second.stdout + second.stderr
    assert "bootstrap: champion is version 1" in second.stdout
    assert champion(stack) == "1"
    # The pipeline's outputs are in the workspace volume, for the monitor.
    workspace = stack.tmp / "volumes/workspace"
    for rel in (
        "models/model.skops",
        "data/features/reference_profile.json",
        "dvc.lock",
        "reports/metrics.json",
    ):
        assert (workspace / rel).is_file(), rel


def test_alertmanager_webhook_token_comes_from_bootstrap_and_the_monitor_accepts_it(
    running: Stack, bootstrapped: tuple[subprocess.CompletedProcess[str], ...]
) -> None:
    """Alertmanager's credentials_file is in the volume bootstrap writes to: the first run
    made the service account, the second kept its token, and the monitor takes it."""
    first, second = bootstrapped
    assert "webhook token of alertmanager" in first.stderr and "created" in first.stderr
    assert "webhook token of alertmanager" in second.stderr and "kept" in second.stderr
    config = yamlfile.safe_load((REPO / "monitoring/alertmanager.yml").read_text())
    (hook,) = [h for r in config["receivers"] for h in r.get("webhook_configs", [])]
    in_alertmanager = hook["http_config"]["authorization"]["credentials_file"]
    (mount,) = [
        m
        for m in mounts(service("alertmanager"))
        if in_alertmanager.startswith(m.target.rstrip("/") + "/")
    ]
    token_file = running.tmp / "volumes" / mount.source / Path(in_alertmanager).name
    token = token_file.read_text()
    assert token.startswith("plb_")
    payload = {"status": "resolved", "alerts": []}
    url = running.url("monitor") + "/alerts"
    assert requests.post(url, json=payload, timeout=10).status_code == 401
    accepted = requests.post(
        url, json=payload, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["outcome"] == "ignored"


def test_the_api_serves_the_champion_loaded_from_mlflow_over_http(running: Stack) -> None:
    from plumbline.core.contract import load_contract
    from plumbline.model.artifact import load_model, positive_proba
    from plumbline.monitoring.settings import load_params

    ready = requests.get(running.url("api") + "/ready", timeout=10).json()
    assert ready["model"]["source"] == "registry"
    assert ready["model"]["model_version"] == champion(running)
    workspace = running.tmp / "volumes/workspace"
    params = load_params(REPO / "params.yaml")
    features = load_contract(REPO / params.data.contract).feature_columns(
        params.featurize.exclude_columns
    )
    import pandas as pd

    rows = pd.read_parquet(workspace / "data/features/test.parquet").head(25)
    body = records(rows, features)
    answer = requests.post(running.url("api") + "/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    got = [p["probability"] for p in answer.json()]
    expected = positive_proba(load_model(workspace / "models/model.skops"), rows[features])
    assert max(abs(a - b) for a, b in zip(got, expected.tolist(), strict=True)) <= 1e-9
    assert {p["model_version"] for p in answer.json()} == {"1"}
    single = requests.post(running.url("api") + "/predict", json=body[0], timeout=30)
    assert single.status_code == 200 and single.json()["model_version"] == "1"
    # The prediction log lands in the volume the monitor reads.
    log_dir = running.tmp / "volumes/logs/predictions"
    deadline = time.monotonic() + 30
    while not (log_dir.is_dir() and any(log_dir.iterdir())):
        assert time.monotonic() < deadline, f"nothing in {log_dir}"
        time.sleep(0.2)


def test_mlflow_answers_the_host_names_of_the_compose_network_and_refuses_others(
    running: Stack,
) -> None:
    url = running.url("mlflow") + "/api/2.0/mlflow/registered-models/search"
    port = running.ports["mlflow"]
    assert requests.get(url, headers={"Host": f"mlflow:{port}"}, timeout=10).status_code == 200
    assert (
        requests.get(url, headers={"Host": f"evil.example:{port}"}, timeout=10).status_code == 403
    )
    # Its job runner is off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION): no huey consumers.
    family = psutil.Process(running.procs["mlflow"].pid).children(recursive=True)
    assert family and not [p for p in family if "huey" in " ".join(p.cmdline())], family


def _query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    answer = requests.get(
        stack.url("prometheus") + "/api/v1/query", params={"query": promql}, timeout=10
    ).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_the_api_and_the_monitor(running: Stack) -> None:
    requests.post(running.url("api") + "/predict", json=[], timeout=30)  # a 422, also counted
    deadline = time.monotonic() + 60
    while True:
        served = _query(
            running, 'sum(plumbline_http_requests_total{route="/predict",status="200"})'
        )
        up = {r["metric"]["job"]: r["value"][1] for r in _query(running, "up")}
        if (
            served
            and float(served[0]["value"][1]) >= 2
            and up.get("plumbline-api") == "1"
            and up.get("plumbline-monitor") == "1"
        ):
            break
        assert time.monotonic() < deadline, (served, up, running.log("prometheus"))
        time.sleep(0.5)
    info = _query(running, "plumbline_model_info == 1")
    assert {r["metric"]["model_version"] for r in info} == {"1"}
    assert {r["metric"]["source"] for r in info} == {"registry"}
    targets = requests.get(running.url("prometheus") + "/api/v1/targets", timeout=10).json()
    api = [t for t in targets["data"]["activeTargets"] if t["labels"]["job"] == "plumbline-api"]
    assert [t["scrapeUrl"] for t in api] == [running.url("api") + "/metrics"]
    assert api[0]["health"] == "up"


def test_the_api_stops_cleanly_on_sigterm(running: Stack) -> None:
    """What `docker stop` (through tini) and Kubernetes send: every process exits, code 0."""
    proc = running.procs["api"]
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(family) > 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, running.log("api")
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, alive
    assert "all server processes stopped" in running.log("api")


def test_compose_runs_exactly_these_services() -> None:
    """Nothing in the default stack is left unstarted here but Alertmanager and Grafana,
    whose configuration test_deploy_compose.py checks against these services."""
    default = {n for n, s in compose()["services"].items() if not s.get("profiles")}
    assert default - {*RUN, "bootstrap"} == {"alertmanager", "grafana"}
