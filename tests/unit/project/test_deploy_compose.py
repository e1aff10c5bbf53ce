"""docker-compose.yml, checked without a Docker engine: valid against the Compose
specification, and consistent with the repository and the code it starts (files it mounts and
builds, ports, commands, routes of its healthchecks, the monitoring configuration it serves).

The services themselves are started as processes in test_deploy_stack.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from support.deploy import (
    PIPELINE_DOCKERFILE,
    PUBLISHED_PORTS,
    SERVE_DOCKERFILE,
    command,
    compose,
    environment,
    healthcheck_url,
    mounts,
    parse_dockerfile,
    ports,
    service,
)
from support.paths import REPO

from plumbline.core import yamlfile
from plumbline.monitoring.settings import load_params

SERVICES = {"mlflow", "bootstrap", "api", "monitor", "prometheus", "alertmanager", "grafana"}
TEAMS = {"postgres", "governance-db"}
S3 = {"minio", "minio-buckets"}
ONE_SHOT = {"bootstrap", "governance-db", "minio-buckets"}
# Every combination of files a user passes with -f.
SETUPS = [(False, False), (True, False), (True, True)]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def listen_port(name: str) -> int:
    """The port the service's process listens on, from its command (or the image default)."""
    argv = command(service(name))
    for i, arg in enumerate(argv):
        if arg == "--port":
            return int(argv[i + 1])
        if arg.startswith("--web.listen-address="):
            return int(arg.rpartition(":")[2])
    defaults = {"grafana": 3000, "postgres": 5432}
    if name == "minio":
        return int(argv[argv.index("--address") + 1].lstrip(":"))
    return defaults[name]


# --- the specification ------------------------------------------------------------------------


# --- services, ports, profiles ----------------------------------------------------------------


def test_the_stack_has_every_service_and_the_team_stores_only_in_their_own_files() -> None:
    assert set(compose()["services"]) == SERVICES
    teams = compose(teams=True)["services"]
    assert set(teams) == SERVICES | TEAMS
    with_s3 = compose(teams=True, s3=True)["services"]
    assert set(with_s3) == SERVICES | TEAMS | S3
    for name, svc in with_s3.items():
        assert "profiles" not in svc, name
        for dep, spec in (svc.get("depends_on") or {}).items():
            # No optional dependency: older compose tools (podman-compose) cannot read one.
            assert "required" not in spec, f"{name} -> {dep}"
    # With the teams file MLflow waits for PostgreSQL, with the S3 file for its bucket too.
    assert set(teams["mlflow"]["depends_on"]) == {"postgres"}
    assert set(with_s3["mlflow"]["depends_on"]) == {"postgres", "minio-buckets"}
    assert "depends_on" not in service("mlflow")
    # Bootstrap waits for the governance tables itself: no file makes it depend on anything.
    assert "depends_on" not in with_s3["bootstrap"]
    assert set(compose(teams=True)["volumes"]) == set(compose()["volumes"]) | {"postgres"}
    volumes = set(compose(teams=True, s3=True)["volumes"])
    assert volumes == set(compose()["volumes"]) | {"postgres", "minio"}


def test_ports_are_published_as_specified_and_are_the_ones_the_processes_listen_on() -> None:
    for name, port in PUBLISHED_PORTS.items():
        published = ports(service(name))
        assert [(p.published, p.target) for p in published] == [(port, port)], name
        assert listen_port(name) == port, name
        # Loopback unless BIND_ADDRESS says otherwise.
        assert published[0].host_ip == "127.0.0.1", name
    assert [p.target for p in ports(service("monitor"))] == [listen_port("monitor")]
    everywhere = compose((("BIND_ADDRESS", "0.0.0.0"),))["services"]
    assert everywhere["api"]["ports"] == ["0.0.0.0:8000:8000"]


# --- files: what is built and mounted exists --------------------------------------------------


@pytest.mark.parametrize(("teams", "s3"), SETUPS)
def test_every_build_context_dockerfile_and_mounted_file_exists(teams: bool, s3: bool) -> None:
    declared = set(compose(teams=teams, s3=s3)["volumes"])
    used: set[str] = set()
    for name, svc in compose(teams=teams, s3=s3)["services"].items():
        build = svc.get("build")
        if build:
            context = REPO / build["context"]
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name
        for mount in mounts(svc):
            if mount.bind:
                assert (REPO / mount.source).exists(), f"{name}: {mount.source} is missing"
                assert mount.read_only, f"{name}: configuration is mounted read-only"
            else:
                assert mount.source in declared, f"{name}: volume {mount.source} undeclared"
                used.add(mount.source)
    assert used == declared


def test_services_of_one_image_share_its_build() -> None:
    builds: dict[str, list[dict[str, str]]] = {}
    for svc in compose()["services"].values():
        if "build" in svc:
            builds.setdefault(svc["image"], []).append(svc["build"])
    assert set(builds) == {"plumbline-pipeline:0.1.0", "plumbline-serve:0.1.0"}
    assert builds["plumbline-serve:0.1.0"] == [
        {
            "context": ".",
            "dockerfile": "serve/Dockerfile",
            "args": {"SERVE_EXTRAS": "serve,postgres"},
        }
    ]
    boosting = (("PLUMBLINE_SERVE_EXTRAS", "serve,postgres,boosting"),)
    with_boosting = compose(env=boosting)["services"]["api"]["build"]["args"]
    assert with_boosting == {"SERVE_EXTRAS": "serve,postgres,boosting"}
    # The commit the runs record: the image holds no git history (docs/deploy.md).
    pipeline_build = {
        "context": ".",
        "dockerfile": "Dockerfile",
        "args": {"GIT_COMMIT": ""},
    }
    assert all(b == pipeline_build for b in builds["plumbline-pipeline:0.1.0"])
    with_commit = compose(env=(("PLUMBLINE_GIT_COMMIT", "0123abc"),))["services"]["bootstrap"]
    assert with_commit["build"]["args"] == {"GIT_COMMIT": "0123abc"}
    assert len(builds["plumbline-pipeline:0.1.0"]) == 3  # mlflow, bootstrap, monitor
    # The teams file's one-shot runs that image, built by the default file.
    teams = service("governance-db", teams=True)
    assert teams["image"] == "plumbline-pipeline:0.1.0" and "build" not in teams


def test_the_api_and_the_monitor_share_the_prediction_log_volume() -> None:
    """The server writes <root>/logs/predictions; the monitor must read the same files."""
    params = load_params(REPO / "params.yaml")
    serve_root = parse_dockerfile(SERVE_DOCKERFILE).final.env()["PLUMBLINE_ROOT"]
    pipeline_root = parse_dockerfile(PIPELINE_DOCKERFILE).final.env()["PLUMBLINE_ROOT"]
    written = Path(serve_root) / params.serve.prediction_log.dir
    read = Path(pipeline_root) / (
        params.monitor.prediction_log_dir or params.serve.prediction_log.dir
    )

    def in_volume(svc: str, path: Path) -> tuple[str, Path]:
        for mount in mounts(service(svc)):
            if (
                not mount.bind
                and path.is_relative_to(mount.target)
                and mount.target != pipeline_root
            ):
                return mount.source, path.relative_to(mount.target)
        raise AssertionError(f"{svc}: {path} is on no shared volume")

    assert in_volume("api", written) == in_volume("monitor", read)
    # The monitor retrains in the workspace that bootstrap filled.
    workspace = {m.source for m in mounts(service("bootstrap")) if m.target == pipeline_root}
    assert workspace and workspace <= {m.source for m in mounts(service("monitor"))}


# --- commands, environment, healthchecks ------------------------------------------------------


def test_pipeline_image_services_run_real_entry_points() -> None:
    from plumbline.cli.main import build_parser

    bootstrap = command(service("bootstrap"))
    assert bootstrap[:2] == ["plumbline", "bootstrap"]
    # The pipeline image's default command is the one-shot too.
    assert parse_dockerfile(PIPELINE_DOCKERFILE).final.all("CMD")[-1].exec_form() == bootstrap[:2]
    args = build_parser().parse_args(bootstrap[1:])
    assert args.command == "bootstrap"
    # The webhook token lands where Alertmanager's configuration reads it, through one volume.
    alertmanager = yamlfile.safe_load((REPO / "monitoring/alertmanager.yml").read_text())
    (hook,) = [h for r in alertmanager["receivers"] for h in r.get("webhook_configs", [])]
    reads = Path(hook["http_config"]["authorization"]["credentials_file"])

    def volume_of(svc: str, path: Path) -> tuple[str, Path]:
        (mount,) = [m for m in mounts(service(svc)) if path.is_relative_to(m.target)]
        assert not mount.bind, f"{svc}: {path} is in a volume"
        return mount.source, path.relative_to(mount.target)

    assert volume_of("bootstrap", args.webhook_token_file) == volume_of("alertmanager", reads)
    governance = build_parser().parse_args(command(service("governance-db", teams=True))[1:])
    assert (governance.command, governance.action, governance.role) == (
        "audit",
        "grant",
        "plumbline_app",
    )
    monitor = command(service("monitor"))
    assert monitor[:2] == ["plumbline", "monitor"]
    args = build_parser().parse_args(monitor[1:])
    assert (args.command, args.host, args.port) == ("monitor", "0.0.0.0", 8001)
    assert command(service("mlflow"))[:2] == ["mlflow", "server"]


def test_api_bootstrap_and_monitor_use_the_mlflow_service_and_the_code_s_variables() -> None:
    params = load_params(REPO / "params.yaml")
    registry = f"http://mlflow:{listen_port('mlflow')}"
    for name in ("api", "bootstrap", "monitor"):
        assert environment(service(name))["MLFLOW_TRACKING_URI"] == registry, name
    # The governance database: the same variable for every service that reads or writes it.
    audit = "PLUMBLINE_AUDIT_URL"
    assert set(environment(service("api"))) == {
        "MLFLOW_TRACKING_URI",
        params.serve.admin_token_env,
        audit,
    }
    assert set(environment(service("monitor"))) == {
        "MLFLOW_TRACKING_URI",
        params.monitor.token_env,
        params.serve.admin_token_env,  # the rollout decider switches the API's mode
        "PLUMBLINE_SERVER_URL",
        audit,
        # The console's charts and alerts, and the key of its CSRF tokens.
        "PLUMBLINE_PROMETHEUS_URL",
        "PLUMBLINE_ALERTMANAGER_URL",
        "PLUMBLINE_CONSOLE_SECRET",
    }
    monitor_env = environment(service("monitor"))
    prometheus = f"http://prometheus:{ports(service('prometheus'))[0].target}"
    alertmanager = f"http://alertmanager:{ports(service('alertmanager'))[0].target}"
    assert monitor_env["PLUMBLINE_PROMETHEUS_URL"] == prometheus
    assert monitor_env["PLUMBLINE_ALERTMANAGER_URL"] == alertmanager
    assert set(environment(service("bootstrap"))) == {"MLFLOW_TRACKING_URI", audit}
    for name in ("api", "monitor", "bootstrap"):
        assert environment(service(name))[audit] is None, f"{name}: passed through from .env"
    # The owner's one-shot (teams) reaches the profile's database `plumbline`.
    owner_url = environment(service("governance-db", teams=True))[audit]
    assert owner_url is not None and owner_url.startswith("postgresql://mlflow:")
    assert owner_url.endswith("@postgres:5432/plumbline")
    assert environment(service("monitor"))["PLUMBLINE_SERVER_URL"] == "http://api:8000"
    # MLflow answers only the Host headers it is told: the name the others use must be one.
    argv = command(service("mlflow"))
    allowed = argv[argv.index("--allowed-hosts") + 1].split(",")
    assert urlparse(registry).netloc in allowed


def test_mlflow_s_job_runner_is_off_in_compose_and_kubernetes() -> None:
    """The stack runs no MLflow jobs; the runner would add several MLflow processes (that
    MLflow honours the variable, test_deploy_stack.py checks on the running server)."""
    variable = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    assert environment(service("mlflow"))[variable] == "false"
    config = yamlfile.safe_load((REPO / "k8s/base/mlflow-configmap.yaml").read_text())
    assert config["data"][variable] == "false"


def test_startup_order_is_expressed_with_conditions_and_health_checks() -> None:
    services = compose(teams=True, s3=True)["services"]
    expected = {
        # Bootstrap has none: it waits for MLflow's /health (--wait-tracking-s) and for the
        # governance tables (--wait-audit-s) itself.
        "mlflow": {
            "postgres": "service_healthy",
            "minio-buckets": "service_completed_successfully",
        },
        "api": {"mlflow": "service_healthy", "bootstrap": "service_completed_successfully"},
        "monitor": {"mlflow": "service_healthy", "bootstrap": "service_completed_successfully"},
        "grafana": {"prometheus": "service_healthy"},
        # Its webhook token is written by bootstrap.
        "alertmanager": {"bootstrap": "service_completed_successfully"},
        "governance-db": {"postgres": "service_healthy"},
    }
    for name, deps in expected.items():
        got = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert got == deps, name
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
    assert "depends_on" not in services["bootstrap"]
    # Podman 4.3 cannot start a container whose finished dependency depends on a running one
    # (its dependency graph leaves the running one out): in every set-up, what others wait
    # to complete depends on nothing.
    for teams, s3 in SETUPS:
        setup = compose(teams=teams, s3=s3)["services"]
        for name, svc in setup.items():
            for dep, spec in (svc.get("depends_on") or {}).items():
                if spec["condition"] == "service_completed_successfully":
                    assert not setup[dep].get("depends_on"), f"{name} -> {dep} -> ..."
            if name in ONE_SHOT:
                assert svc["restart"] == "no", name
            else:
                assert "healthcheck" in svc, name
                assert svc["restart"] == "unless-stopped", name


def test_healthchecks_request_routes_that_exist() -> None:
    from plumbline.monitoring.service import create_app
    from plumbline.serving.server import ROUTES

    # Routes are declared when the app is made; the monitor objects are only used per request.
    app = create_app(None, None, None, refresh_loop=False)
    monitor_routes = {getattr(r, "path", "") for r in app.routes}
    routes = {
        "api": set(ROUTES),
        "monitor": monitor_routes,
        # MLflow's, Prometheus's, Alertmanager's and Grafana's documented health routes;
        # the first is requested for real in test_deploy_stack.py.
        "mlflow": {"/health"},
        "prometheus": {"/-/ready"},
        "alertmanager": {"/-/ready"},
        "grafana": {"/api/health"},
    }
    for name, known in routes.items():
        url = urlparse(healthcheck_url(service(name)) or "")
        assert url.hostname == "127.0.0.1", name
        assert url.port == listen_port(name), name
        assert url.path in known, f"{name}: {url.path} is not a route"
    assert urlparse(healthcheck_url(service("api")) or "").path == "/ready"


# --- the monitoring configuration it serves ---------------------------------------------------


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def test_prometheus_alertmanager_and_grafana_configuration_point_at_these_services() -> None:
    services = compose()["services"]
    prom_mount = next(m for m in mounts(service("prometheus")) if m.bind)
    config_flag = next(a for a in command(service("prometheus")) if a.startswith("--config.file="))
    config_path = Path(config_flag.partition("=")[2])
    local = REPO / prom_mount.source / config_path.relative_to(prom_mount.target)
    config = yamlfile.safe_load(local.read_text())
    for pattern in config.get("rule_files", []):
        assert list(local.parent.glob(pattern)), f"no rule file matches {pattern}"
    scraped = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = _host_port(target)
                if host != "localhost":
                    assert host in services, f"{job['job_name']}: no service {host}"
                    assert port == listen_port(host), f"{job['job_name']}: {target}"
                    scraped[host] = job.get("metrics_path", "/metrics")
    assert scraped == {"api": "/metrics", "monitor": "/metrics"}
    for am in config["alerting"]["alertmanagers"]:
        for static in am["static_configs"]:
            assert [_host_port(t) for t in static["targets"]] == [
                ("alertmanager", listen_port("alertmanager"))
            ]

    am_mount = next(m for m in mounts(service("alertmanager")) if m.bind)
    alertmanager = yamlfile.safe_load((REPO / am_mount.source).read_text())
    hooks = [
        urlparse(h["url"]) for r in alertmanager["receivers"] for h in r.get("webhook_configs", [])
    ]
    assert hooks, "alertmanager.yml sends no webhook to the retraining trigger"
    for hook in hooks:
        assert (hook.hostname, hook.port) == ("monitor", listen_port("monitor"))

    grafana = {m.target: REPO / m.source for m in mounts(service("grafana")) if m.bind}
    provisioning = grafana["/etc/grafana/provisioning"]
    for path in (provisioning / "datasources").glob("*.y*ml"):
        for source in yamlfile.safe_load(path.read_text())["datasources"]:
            url = urlparse(source["url"])
            assert (url.hostname, url.port) == ("prometheus", listen_port("prometheus"))
    for path in (provisioning / "dashboards").glob("*.y*ml"):
        for provider in yamlfile.safe_load(path.read_text())["providers"]:
            mounted = grafana[provider["options"]["path"]]
            assert list(mounted.glob("*.json")), f"no dashboard in {mounted}"


# --- secrets and image tags -------------------------------------------------------------------


def test_every_image_is_pinned_to_a_tag_and_ours_carry_the_project_version() -> None:
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, svc in compose()["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", name
        if repo.startswith("plumbline-"):
            assert tag == version, name
