"""The Kubernetes manifests: kustomize renders the base and the overlay, every object passes
the Kubernetes schemas (strict: no unknown fields), the API Deployment runs the same command as
docker compose with probes, ports and scrape annotations on real routes, and the monitor (with
the console) reads the prediction log the API pods write.

Needs `kubectl` (with its built-in kustomize); without it these tests skip, except in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from support.deploy import K8S, command, service

KUBECTL = shutil.which("kubectl")
# The oldest Kubernetes these manifests are meant for, and the newest the schemas bundle.
VERSIONS = ("1.29.0", "1.37.0")
OVERLAYS = {"base": K8S / "base", "production": K8S / "overlays/production"}

if KUBECTL is None and not os.environ.get("CI"):
    pytest.skip(
        "kubectl is not installed (it brings kustomize); CI must have it", allow_module_level=True
    )


def render(name: str) -> list[dict[str, Any]]:
    assert KUBECTL, "kubectl is required in CI"
    done = subprocess.run(
        [KUBECTL, "kustomize", str(OVERLAYS[name])], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


@pytest.mark.parametrize("name", OVERLAYS)
def test_kustomize_renders_and_every_object_passes_the_kubernetes_schemas(name: str) -> None:
    import kubernetes_validate

    docs = render(name)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 3  # the API, MLflow, the monitor with the console
    assert {
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "PersistentVolumeClaim",
    } <= set(kinds)
    assert "Secret" not in kinds, "secrets are created out of band, never committed"
    for version in VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_rejects_a_misspelt_field() -> None:
    import kubernetes_validate

    deployment = find(render("base"), "Deployment", "plumbline-api")
    container(deployment)  # one container
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_api_runs_the_compose_command_with_probes_on_real_routes() -> None:
    from plumbline.serving.server import ROUTES

    docs = render("production")
    deployment = find(docs, "Deployment", "plumbline-api")
    api = container(deployment)
    argv = api["command"]
    assert argv == command(service("api"))
    port = int(argv[argv.index("--port") + 1])
    named = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert named == {"http": port}
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = api[probe]["httpGet"]
        assert get["path"] in ROUTES and get["port"] in named, probe
    assert api["image"].split(":")[0].endswith("plumbline-serve")
    assert api["image"].split(":")[1] == service("api")["image"].split(":")[1]
    for kind in ("requests", "limits"):
        assert set(api["resources"][kind]) == {"cpu", "memory"}, kind
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in ROUTES
    security = api["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # Room for the server to finish in-flight requests after SIGTERM.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_service_hpa_and_pdb_select_the_api_pods() -> None:
    docs = render("production")
    deployment = find(docs, "Deployment", "plumbline-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    svc = find(docs, "Service", "plumbline-api")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    pdb = find(docs, "PodDisruptionBudget", "plumbline-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] >= 1
    hpa = find(docs, "HorizontalPodAutoscaler", "plumbline-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "plumbline-api",
    }
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_mlflow_runs_on_postgresql_and_s3_by_configuration() -> None:
    docs = render("production")
    mlflow = container(find(docs, "Deployment", "mlflow"))
    argv = mlflow["command"]
    compose_argv = command(service("mlflow"))
    # The compose command with the stores and the allowed Host names taken from configuration.
    configured = {
        "--backend-store-uri": "$(MLFLOW_BACKEND_STORE_URI)",
        "--artifacts-destination": "$(MLFLOW_ARTIFACTS_DESTINATION)",
        "--allowed-hosts": "$(MLFLOW_ALLOWED_HOSTS)",
    }
    expected = list(compose_argv)
    for flag, value in configured.items():
        expected[expected.index(flag) + 1] = value
    assert argv == expected
    env = {e["name"]: e for e in mlflow["env"]}
    backend = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert backend == {"name": "plumbline-mlflow", "key": "backend-store-uri"}
    config = find(docs, "ConfigMap", "plumbline-mlflow")["data"]
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    hosts = config["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert "mlflow:5000" in hosts and "mlflow.plumbline.svc.cluster.local:5000" in hosts
    # The API reaches it under the name and port it allows.
    api_config = find(docs, "ConfigMap", "plumbline-api")["data"]
    assert api_config["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    svc = find(docs, "Service", "mlflow")
    assert svc["spec"]["ports"][0]["port"] == 5000
    assert mlflow["image"].split(":")[0].endswith("plumbline-pipeline")


def test_the_overlay_puts_everything_in_its_namespace() -> None:
    docs = render("production")
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {"plumbline"}
    namespace = find(docs, "Namespace", "plumbline")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_monitor_serves_the_console_and_reads_the_log_the_api_pods_write() -> None:
    from support.paths import REPO

    from plumbline.cli.main import build_parser
    from plumbline.monitoring.settings import load_params

    docs = render("production")
    deployment = find(docs, "Deployment", "plumbline-monitor")
    monitor = container(deployment)
    assert monitor["command"] == command(service("monitor"))
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # one SQLite owner
    (init,) = spec["template"]["spec"]["initContainers"]
    args = build_parser().parse_args(init["command"][1:])
    assert (args.command, args.outputs_only) == ("bootstrap", True)  # never promotes
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert monitor[probe]["httpGet"]["path"] == "/health", probe
    svc = find(docs, "Service", "plumbline-monitor")
    assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["port"] == 8001
    config = find(docs, "ConfigMap", "plumbline-monitor")["data"]
    assert config["PLUMBLINE_SERVER_URL"] == "http://plumbline-api:8000"
    assert load_params(REPO / "params.yaml").monitor.console.enabled

    # The API pods write <serve root>/logs/predictions; the monitor reads
    # <workspace>/logs/predictions: the same ReadWriteMany claim at both "logs" mounts.
    def claim_at(deployment: dict[str, Any], path: str) -> str:
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == path]
        return str(volumes[mount["name"]]["persistentVolumeClaim"]["claimName"])

    api = find(docs, "Deployment", "plumbline-api")
    assert claim_at(api, "/app/logs") == claim_at(deployment, "/workspace/logs") == "plumbline-logs"
    logs = find(docs, "PersistentVolumeClaim", "plumbline-logs")
    assert logs["spec"]["accessModes"] == ["ReadWriteMany"]
    # Both authenticate against one governance database, from one secret.
    for pod in (api, deployment):
        env = {e["name"]: e for e in container(pod)["env"]}
        ref = env["PLUMBLINE_AUDIT_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "plumbline-governance", pod["metadata"]["name"]
