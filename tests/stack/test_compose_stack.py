"""docker-compose.yml in real containers, as a user without a container registry runs it:

    deploy/podman/build-images.sh
    podman-compose -f docker-compose.yml -f deploy/podman/compose.standins.yml up -d \\
        mlflow bootstrap api monitor prometheus alertmanager

The images come from the project's Dockerfiles on a Debian-built Python base (the official
python image when it can be pulled), Prometheus and Alertmanager are Debian-built stand-ins (the
override file changes image names only) and Grafana, which has no Debian package, is not
started. Podman runs no health checks without systemd: ``HealthDriver`` runs them, and the
API's health is read from the engine as Docker would report it.

The tests run in order on one stack: build, up, serve, scrape, alert, down and up again, down
with volumes; whatever happens, nothing of the project is left behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml
from support.paths import REPO
from support.stack import SERVICES, TAG, Engine, HealthDriver, engine_env, taken_ports, wait_for

from plumbline.core import yamlfile

pytestmark = pytest.mark.timeout(2400)

PROJECT = "plumblinestack"
API = "http://127.0.0.1:8000"
MLFLOW = "http://127.0.0.1:5000"
MONITOR = "http://127.0.0.1:8001"
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
SBOM_DIR = REPO / "build/sbom"
# The serving image's venv plus the application it copies, at most (issue 28).
SERVE_VENV_AND_APP_MB = 380


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine(PROJECT)
    taken = taken_ports(5000, 8000, 8001, 9090, 9093)
    assert not taken, f"127.0.0.1 ports {taken} are taken: the stack publishes its ports there"
    engine.cleanup()  # what an earlier, killed run may have left
    driver = HealthDriver(engine)
    driver.start()
    try:
        yield engine
    finally:
        driver.stop()
        engine.cleanup()


def _in_image(engine: Engine, image: str, *argv: str, user: str | None = None) -> str:
    flags = ["--rm", "--network", "none", "--entrypoint", argv[0]]
    if user:
        flags += ["--user", user]
    return engine.podman("run", *flags, image, *argv[1:], timeout=120)


def test_images_run_unprivileged_under_tini_without_pip_and_report_their_size(
    engine: Engine, images: dict[str, int]
) -> None:
    for name in ("plumbline-pipeline", "plumbline-serve"):
        image = f"{name}:{TAG}"
        (config,) = json.loads(engine.podman("image", "inspect", image))
        assert config["Config"]["User"] == "10001:10001"
        assert config["Config"]["Entrypoint"][:2] == ["tini", "--"]
        no_pip = engine.podman(
            "run", "--rm", "--network", "none", "--entrypoint", "python", image,
            "-c", "import importlib.util as u; print(u.find_spec('pip'))",
            timeout=120,
        )  # fmt: skip
        assert no_pip.strip() == "None", image
        venv_mb = int(_in_image(engine, image, "du", "-sm", "/opt/venv").split()[0])
        print(f"{image}: {images[name] / 1e6:.0f} MB, venv {venv_mb} MB")
    # The pipeline trains XGBoost and LightGBM too; LightGBM needs the system's OpenMP.
    boosters = _in_image(
        engine, f"plumbline-pipeline:{TAG}", "python", "-c",
        "import lightgbm, xgboost; print(lightgbm.__version__, xgboost.__version__)",
    )  # fmt: skip
    assert len(boosters.split()) == 2, boosters
    (serve,) = json.loads(engine.podman("image", "inspect", f"plumbline-serve:{TAG}"))
    # Docker's image format keeps the health check (podman's OCI default drops it).
    healthcheck = serve.get("Healthcheck") or serve["Config"].get("Healthcheck") or {}
    assert "/ready" in " ".join(healthcheck.get("Test", []))
    app_mb = int(
        _in_image(engine, f"plumbline-serve:{TAG}", "du", "-smc", "/opt/venv", "/app")
        .splitlines()[-1]
        .split()[0]
    )
    assert app_mb <= SERVE_VENV_AND_APP_MB, f"serving venv and app: {app_mb} MB"


def test_each_image_has_a_cyclonedx_sbom_of_what_its_venv_holds(
    engine: Engine, images: dict[str, int]
) -> None:
    """The SBOM tool runs in a throwaway venv inside the image, beside the venv it reads."""
    SBOM_DIR.mkdir(parents=True, exist_ok=True)
    version = metadata.version("cyclonedx-bom")
    pins = dict(
        line.strip().split("==", 1)
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line
    )
    for name in ("plumbline-pipeline", "plumbline-serve"):
        out = SBOM_DIR / f"{name}-{TAG}.cdx.json"
        script = (
            "python -m venv /tmp/sbom && /tmp/sbom/bin/pip install -q --disable-pip-version-check "
            f"cyclonedx-bom=={version} && /tmp/sbom/bin/cyclonedx-py environment --of JSON "
            f"--output-reproducible -o /out/{out.name} /opt/venv"
        )
        engine.podman(
            "run", "--rm", "--network", "host", "--user", "0", "--entrypoint", "sh",
            "-v", f"{SBOM_DIR}:/out", f"{name}:{TAG}", "-c", script,
            timeout=600,
        )  # fmt: skip
        bom = json.loads(out.read_text())
        assert bom["bomFormat"] == "CycloneDX"
        found = {c["name"].lower(): c.get("version") for c in bom["components"]}
        assert "scikit-learn" in found and "pandas" in found, sorted(found)
        # Every component is the locked version.
        locked = {k.lower(): v for k, v in pins.items()}
        wrong = {n: v for n, v in found.items() if n in locked and locked[n] != v}
        assert not wrong, wrong
        print(f"{out.relative_to(REPO)}: {len(found)} components")


def _probe(container: str, path: str) -> bool:
    """The request of an httpGet probe, made inside the pod: True on a 2xx answer."""
    script = f"import urllib.request as u; u.urlopen('http://127.0.0.1:8000{path}', timeout=3)"
    done = subprocess.run(
        ["podman", "exec", container, "python", "-c", script],
        env=engine_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def test_podman_kube_play_runs_the_rendered_api_deployment(
    engine: Engine, images: dict[str, int], tmp_path: Path
) -> None:
    """`kubectl kustomize k8s/base`'s API Deployment, its ConfigMap and the log claim, played by
    podman. What podman 4.3 cannot do: a second replica (each pod publishes the container port
    on the host, so it runs one), readiness and startup probes (ignored), and an httpGet
    liveness probe on a named port (it becomes `curl -f http://localhost:0/health`, and the
    image has no curl). The test runs the probes' own requests in the pod instead."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its kustomize) is required"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(REPO / "k8s/base")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    wanted = {
        ("Deployment", "plumbline-api"),
        ("ConfigMap", "plumbline-api"),
        ("PersistentVolumeClaim", "plumbline-logs"),
    }
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    played = [d for d in docs if (d["kind"], d["metadata"]["name"]) in wanted]
    assert len(played) == len(wanted)
    (deployment,) = [d for d in played if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = 1
    manifest = tmp_path / "api.yaml"
    manifest.write_text(yaml.safe_dump_all(played))
    container = "plumbline-api-pod-0-api"
    networks_before = set(engine.podman("network", "ls", "--format", "{{.Name}}").split())
    try:
        engine.podman("kube", "play", str(manifest), timeout=300)
        (spec,) = deployment["spec"]["template"]["spec"]["containers"]
        ready, live = spec["readinessProbe"]["httpGet"]["path"], spec["livenessProbe"]["httpGet"]
        wait_for("the pod's readiness route", lambda: _probe(container, ready), 300)
        assert _probe(container, live["path"])
        (inspected,) = json.loads(engine.podman("inspect", container))
        assert inspected["Config"]["User"] == "10001:10001"
        assert inspected["State"]["Status"] == "running"
        print("podman's liveness check:", inspected["Config"].get("Healthcheck", {}).get("Test"))
    finally:
        engine.podman("kube", "down", str(manifest), check=False, timeout=300)
        engine.podman("volume", "rm", "-f", "plumbline-logs", check=False)
        # kube play's own network, when it made it.
        for network in set(engine.podman("network", "ls", "--format", "{{.Name}}").split()):
            if network not in networks_before:
                engine.podman("network", "rm", "-f", network, check=False)
    assert "plumbline-api-pod-0" not in engine.podman("pod", "ls", "--format", "{{.Name}}")


@pytest.fixture(scope="module")
def up(engine: Engine, images: dict[str, int]) -> Engine:
    started = time.monotonic()
    done = engine.compose("up", "-d", *SERVICES)
    assert done.returncode == 0, "\n".join(engine.log)
    print(f"first up: {time.monotonic() - started:.0f} s")
    assert engine.wait_exited("bootstrap", 900) == 0, engine.logs("bootstrap")
    wait_for("the API is healthy", lambda: engine.health("api") == "healthy", 300, engine)
    # Under podman 4.3 the API may start before bootstrap registered the champion: it serves
    # its baked-in fallback and switches once the alias appears (serve.poll_interval_s).
    wait_for("the API serves the registry's champion", _serves_registry_champion, 120, engine)
    return engine


def _serves_registry_champion() -> bool:
    model = requests.get(f"{API}/ready", timeout=5).json().get("model") or {}
    return bool(model.get("source") == "registry" and model.get("model_version") == "1")


def _champion() -> dict[str, Any]:
    params = yamlfile.safe_load((REPO / "params.yaml").read_text())
    name = params["mlflow"]["model_name"]
    answer = requests.get(
        f"{MLFLOW}/api/2.0/mlflow/registered-models/alias",
        params={"name": name, "alias": "champion"},
        timeout=10,
    )
    answer.raise_for_status()
    version: dict[str, Any] = answer.json()["model_version"]
    return version


def _versions() -> list[str]:
    params = yamlfile.safe_load((REPO / "params.yaml").read_text())
    answer = requests.get(
        f"{MLFLOW}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{params['mlflow']['model_name']}'"},
        timeout=10,
    )
    answer.raise_for_status()
    return sorted(v["version"] for v in answer.json().get("model_versions", []))


def _out_hashes(lock_text: str) -> dict[str, str]:
    lock = yamlfile.safe_load(lock_text)
    return {
        out["path"]: out.get("md5", "")
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


def test_bootstrap_reproduces_the_committed_lock_and_registers_the_image_commit(
    up: Engine,
) -> None:
    logs = up.logs("bootstrap")
    assert "bootstrap: champion is version 1; the API can serve it" in logs, logs[-3000:]
    inside = up.exec("monitor", "cat", "/workspace/dvc.lock")
    assert _out_hashes(inside) == _out_hashes((REPO / "dvc.lock").read_text())
    champion = _champion()
    assert champion["version"] == "1"
    run = requests.get(
        f"{MLFLOW}/api/2.0/mlflow/runs/get", params={"run_id": champion["run_id"]}, timeout=10
    ).json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tags["plumbline.git_commit"].removesuffix("-dirty") == head


def test_the_api_is_healthy_and_predicts_through_the_published_port(up: Engine) -> None:
    assert up.health("api") == "healthy"
    rows = pd.read_csv(REPO / "data/raw/bank-additional.csv", sep=";").head(5)
    body = json.loads(rows.drop(columns=["y", "duration"]).to_json(orient="records"))
    answer = requests.post(f"{API}/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert [p["model_version"] for p in answer.json()] == ["1"] * 5
    explained = requests.post(f"{API}/predict?explain=3", json=body[0], timeout=30)
    assert explained.status_code == 200, explained.text
    bad = requests.post(f"{API}/predict", json=[{"age": "old"}], timeout=30)
    assert bad.status_code == 422 and "age" in bad.text


def _rule_count() -> int:
    total = 0
    for path in sorted((REPO / "monitoring/rules").glob("*.yml")):
        doc = yamlfile.safe_load(path.read_text())
        total += sum(len(group["rules"]) for group in doc["groups"])
    return total


def test_prometheus_scrapes_the_api_and_the_monitor_with_every_rule_loaded(up: Engine) -> None:
    def targets_up() -> dict[str, str]:
        got = requests.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()
        health = {t["labels"]["job"]: t["health"] for t in got["data"]["activeTargets"]}
        return (
            health
            if {health.get("plumbline-api"), health.get("plumbline-monitor")} == {"up"}
            else {}
        )

    wait_for("Prometheus scrapes the API and the monitor", targets_up, 180, up)
    groups = requests.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in groups) == _rule_count()


def test_an_alert_reaches_the_monitors_webhook(up: Engine) -> None:
    alert = {
        "labels": {"alertname": "StackTestAlert", "action": "retrain", "severity": "info"},
        "annotations": {"summary": "sent by the stack test"},
        "startsAt": datetime.now(UTC).isoformat(),
    }
    sent = requests.post(f"{ALERTMANAGER}/api/v2/alerts", json=[alert], timeout=10)
    assert sent.status_code == 200, sent.text

    def received() -> bool:
        text = requests.get(f"{MONITOR}/metrics", timeout=10).text
        return any(
            line.startswith("plumbline_monitor_alerts_received_total")
            and 'alertname="StackTestAlert"' in line
            and float(line.rsplit(" ", 1)[1]) >= 1
            for line in text.splitlines()
        )

    wait_for("the monitor received the alert", received, 120, up)


def _logged_request_ids(engine: Engine) -> set[str]:
    script = (
        "import glob, pandas as pd\n"
        "files = sorted(glob.glob('/workspace/logs/predictions/predictions-*.parquet'))\n"
        "ids = set()\n"
        "for f in files:\n"
        "    ids |= set(pd.read_parquet(f, columns=['request_id'])['request_id'])\n"
        "print('\\n'.join(sorted(ids)))\n"
    )
    return set(engine.exec("monitor", "python", "-c", script).split())


def test_down_and_up_keep_the_registry_the_champion_and_the_prediction_log(up: Engine) -> None:
    versions = _versions()
    rows = pd.read_csv(REPO / "data/raw/bank-additional.csv", sep=";").head(3)
    body = json.loads(rows.drop(columns=["y", "duration"]).to_json(orient="records"))
    ids = []
    for record in body:
        answer = requests.post(f"{API}/predict", json=record, timeout=30)
        assert answer.status_code == 200
        ids.append(answer.headers["X-Request-ID"])
    down = up.compose("down", "--timeout", "60")
    assert down.returncode == 0, "\n".join(up.log)
    # Stopped with SIGTERM, the API finished its open log file: nothing logged is lost.
    started = time.monotonic()
    again = up.compose("up", "-d", *SERVICES)
    assert again.returncode == 0, "\n".join(up.log)
    code = up.wait_exited("bootstrap", 600)
    print(f"second up, bootstrap done: {time.monotonic() - started:.0f} s")
    logs = up.logs("bootstrap")
    assert code == 0, logs
    assert "Data and pipelines are up to date." in logs, logs[-3000:]
    assert "bootstrap: champion is version 1" in logs
    assert _versions() == versions
    assert _champion()["version"] == "1"
    assert set(ids) <= _logged_request_ids(up)
    wait_for("the API is healthy again", lambda: up.health("api") == "healthy", 300, up)


def test_down_with_volumes_leaves_nothing(up: Engine) -> None:
    done = up.compose("down", "-v", "--timeout", "60")
    assert done.returncode == 0, "\n".join(up.log)
    assert up.leftovers() == {"containers": [], "volumes": [], "networks": [], "pods": []}
