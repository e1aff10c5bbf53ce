"""Helpers of the monitoring tests: a small project built by the real pipeline, and the real
processes around it on free loopback ports: the prediction server (``plumbline serve``, started
through support.serve.Server), the monitor (``plumbline monitor``), Prometheus and Alertmanager
(Debian's binaries) with configurations derived from the files in monitoring/.

The project: rows sampled from the early part of the real bank file (2008, positive rate about
4 %) are the training history; "live" traffic comes from the last tenth of the file (2010,
positive rate above 40 %). The base project (ingest ... evaluate) is built once per session;
each test gets a copy with its own MLflow store, so nothing touches the repository.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import requests
import yaml

from plumbline.core import yamlfile
from plumbline.monitoring.demo import webhook_credentials
from support import localstack
from support.cli import in_project, ok
from support.mlflowstore import new_store
from support.params import deep_update
from support.paths import BANK_FULL, MONITORING, REPO
from support.process import Process
from support.serve import Server, session_dir

MODEL_NAME = "plumbline-monitor-test"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")

RULES = MONITORING / "rules/plumbline.rules.yml"
RULE_TESTS = MONITORING / "tests/rules_test.yml"
# Every rule file Prometheus loads (rules/*.yml) and the promtool tests of each.
RULE_FILES = (RULES, MONITORING / "rules/rollout.rules.yml")
RULE_TEST_FILES = (RULE_TESTS, MONITORING / "tests/rollout_rules_test.yml")
DASHBOARD = MONITORING / "grafana/dashboards/plumbline.json"

HISTORY_STEP = 8  # every 8th row of the first 60 % of the file: 3,089 rows
LIVE_START = 0.9  # live traffic: the last tenth of the file


@cache
def bank_full() -> pd.DataFrame:
    return pd.read_csv(BANK_FULL, sep=";", dtype=str, keep_default_na=False)


def history_frame() -> pd.DataFrame:
    frame = bank_full()
    return frame.iloc[: int(0.6 * len(frame)) : HISTORY_STEP]


def live_frame() -> pd.DataFrame:
    frame = bank_full()
    return frame.iloc[int(LIVE_START * len(frame)) :]


def live_records(start: int, count: int) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON records of live rows [start, start + count) and their true outcomes (yes/no)."""
    from plumbline.core.contract import load_contract

    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(["duration"])
    part = live_frame().iloc[start : start + count]
    out = []
    for raw in part[features].to_dict(orient="records"):
        out.append(
            {
                k: (
                    int(v)
                    if contract.columns[k].type == "integer"
                    else float(v)
                    if contract.columns[k].type == "float"
                    else v
                )
                for k, v in raw.items()
            }
        )
    return out, part["y"].tolist()


@cache
def history_project() -> Path:
    """The history as the project's CSV source, ingested, validated and split (in this
    process: what the window policy needs, without a model)."""
    root = session_dir() / "monitoring-history"
    (root / "data/raw").mkdir(parents=True)
    history_frame().to_csv(root / "data/raw/history.csv", sep=";", index=False)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "contracts", root / "contracts")
    params = yamlfile.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"]["path"] = "data/raw/history.csv"
    params["mlflow"]["model_name"] = MODEL_NAME
    # Models and retrains here train with the params as written: the search is the pipeline
    # tests' subject, and a retrain's time goes to what the monitoring tests check.
    params["tune"]["trials"] = 0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with in_project(root):
        for stage in ("ingest", "validate", "featurize"):
            ok(stage)
    return root


@cache
def base_project() -> Path:
    """The history project with a model: every stage of dvc.yaml has run."""
    root = session_dir() / "monitoring-base"
    shutil.copytree(history_project(), root)
    with in_project(root):
        ok("tune", "--no-mlflow")
        ok("train")
        ok("evaluate", "--no-mlflow")
    return root


class Project:
    """A copy of the base project with its own params, MLflow store and state."""

    def __init__(self, root: Path, overrides: dict[str, Any], with_model: bool = True) -> None:
        shutil.copytree(base_project() if with_model else history_project(), root)
        self.root = root
        self.store = new_store(root / "mlflow.db")
        self.log_dir = root / "logs/predictions"
        params = yamlfile.safe_load((root / "params.yaml").read_text())
        defaults: dict[str, Any] = {
            # Loose enough for models trained on a few thousand rows of a shifting period.
            "gate": {
                "min_roc_auc": 0.0,
                "min_pr_auc": 0.0,
                "max_brier": 0.35,
                "max_regression": 0.02,
            },
            "serve": {
                "fallback_artifact": str(root / "models/model.skops"),
                "poll_interval_s": 1.0,
                "api_servers": 1,
                "prediction_log": {"dir": str(self.log_dir), "flush_s": 0.2, "rotate_s": 1.0},
            },
            "monitor": {
                "interval_s": 1.0,
                "window_rows": 400,
                "label_window_rows": 400,
                "min_labelled_rows": 100,
                "state_dir": str(root / "logs/monitor"),
                "report_dir": str(root / "reports/drift"),
                "drift": {"min_rows": 100},
            },
            "retrain": {
                "cooldown_s": 3600.0,
                "min_new_labels": 100,
                "window": {
                    "live_rows": 500,
                    "history_rows": 500,
                    "max_history_per_live": 1.0,
                    "min_live_rows": 100,
                },
            },
        }
        deep_update(params, defaults)
        deep_update(params, overrides)
        self.params = root / "params.yaml"
        self.params.write_text(yaml.safe_dump(params, sort_keys=False))

    def promote_current(self) -> None:
        """Gate and promote the project's model: the first champion of the store. Set-up, so in
        this process: `make` in test_reproducible.py and every retrain run them as processes."""
        with in_project(self.root, self.store):
            ok("gate")
            ok("promote")

    def registry(self) -> Any:
        """The project's registry, with the project's audit trail (its champion history)."""
        from plumbline.governance.trail import AuditTrail
        from plumbline.monitoring.settings import load_params
        from plumbline.promotion.registry import Registry

        trail = AuditTrail.for_project(load_params(self.params).audit, self.root)
        return Registry(MODEL_NAME, self.store, trail)

    def server(self, **serve: Any) -> Server:
        """The real server on this project's params (overrides of the serve section apply
        on top of the project's)."""
        srv = Server(self.root / "server", self.store)
        params = yamlfile.safe_load(self.params.read_text())
        deep_update(params["serve"], serve)
        params["data"]["contract"] = str(REPO / "contracts/bank_marketing.yaml")
        srv.params = self.root / "server" / "params.yaml"
        srv.params.write_text(yaml.safe_dump(params, sort_keys=False))
        return srv


def user_token(root: Path, params: Path, name: str, role: str = "operator") -> str:
    """A personal token of ``name`` (made with ``role`` on first use, a new token for it
    after) in the project's governance database."""
    from plumbline.governance.identity import Users, check_role
    from plumbline.governance.trail import AuditTrail
    from plumbline.monitoring.settings import load_params

    trail = AuditTrail.for_project(load_params(params).audit, root)
    try:
        users = Users(trail.engine)
        if users.role(name) is None:
            return users.add(name, check_role(role))[1]
        return users.token(name)[1]
    finally:
        trail.close()


def operator_token(root: Path, params: Path, name: str = "tests-operator") -> str:
    """A personal token of role operator in the project's governance database."""
    return user_token(root, params, name, "operator")


class MonitorProcess(Process):
    """``plumbline monitor`` on the project, with an operator's token (``auth``) for its
    guarded routes."""

    name = "monitor"

    def __init__(self, project: Project, env: dict[str, str] | None = None) -> None:
        super().__init__(project.root / "monitor-proc")
        self.project = project
        self.extra_env = env or {}
        self.token = operator_token(project.root, project.params)
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "plumbline",
            "--params",
            str(self.project.params),
            "monitor",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def env(self) -> dict[str, str]:
        return dict(
            super().env(),
            PLUMBLINE_ROOT=str(self.project.root),
            MLFLOW_TRACKING_URI=self.project.store,
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )

    def start(self) -> MonitorProcess:
        super().start()
        self.wait("/health")
        return self

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = requests.get(self.url + "/status", timeout=30).json()
        return result

    def refresh(self) -> dict[str, Any]:
        result: dict[str, Any] = requests.post(
            self.url + "/refresh", headers=self.auth, timeout=60
        ).json()
        return result

    def feedback(self, items: Any) -> requests.Response:
        return requests.post(self.url + "/feedback", json=items, headers=self.auth, timeout=30)

    def post(self, path: str, body: Any = None) -> requests.Response:
        """A guarded POST (``/alerts``, ``/retrain``, ...) as the operator."""
        return requests.post(self.url + path, json=body, headers=self.auth, timeout=30)

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=30).text


class PrometheusProcess(Process):
    """Debian's Prometheus with monitoring/prometheus.yml, targets moved to loopback ports."""

    name = "prometheus"

    def __init__(
        self,
        directory: Path,
        api: str,
        monitor: str,
        alertmanager: str | None = None,
        interval: str = "1s",
    ) -> None:
        super().__init__(directory)
        targets = {
            "plumbline-api": api,
            "plumbline-monitor": monitor,
            "prometheus": f"127.0.0.1:{self.port}",
        }
        self.config = localstack.prometheus(
            directory, targets, alertmanager, interval, pending="1s"
        )

    def argv(self) -> list[str]:
        assert PROMETHEUS
        return [
            PROMETHEUS,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    def start(self) -> PrometheusProcess:
        super().start()
        self.wait("/-/ready")
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def api(self, path: str) -> Any:
        body = requests.get(self.url + "/api/v1/" + path, timeout=30).json()
        assert body["status"] == "success", body
        return body["data"]


class AlertmanagerProcess(Process):
    """Debian's Alertmanager with monitoring/alertmanager.yml: the retrain webhook pointed at
    the test's monitor with ``token`` as its bearer credential (a file, as in the shipped
    configuration), grouping waits shortened to a second."""

    name = "alertmanager"

    def __init__(self, directory: Path, monitor_url: str, token: str) -> None:
        super().__init__(directory)
        self.config = localstack.alertmanager(
            directory,
            monitor_url,
            {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "5s"},
        )
        webhook_credentials(self.config, token)

    def argv(self) -> list[str]:
        assert ALERTMANAGER
        return [
            ALERTMANAGER,
            f"--config.file={self.config}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    def start(self) -> AlertmanagerProcess:
        super().start()
        self.wait("/-/ready")
        return self


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.5,
    details: Callable[[], str] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(every)


def panel_queries(rate_interval: str = "30s") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the Grafana dashboard, with Grafana's
    ``$__rate_interval`` replaced as Grafana would (at least four scrape intervals)."""
    import json

    dashboard = json.loads((MONITORING / "grafana/dashboards/plumbline.json").read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"].replace("$__rate_interval", rate_interval)))
    return out


def write_log(
    directory: Path,
    request_ids: list[str],
    records: list[dict[str, Any]],
    probabilities: list[float],
    version: str,
    received_at: float | None = None,
    threshold: float = 0.5,
) -> None:
    """One finished prediction-log file, written by the server's own PredictionLog code."""
    import numpy as np

    from plumbline.core.contract import load_contract
    from plumbline.serving.metrics import ServeMetrics
    from plumbline.serving.predlog_writer import Batch, PredictionLog
    from plumbline.serving.settings import PredictionLogConfig

    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(["duration"])
    writer = PredictionLog(
        PredictionLogConfig(dir=directory),
        directory,
        contract,
        features,
        ServeMetrics(False, "worker"),
    )
    writer.start()
    p = np.asarray(probabilities, dtype=float)
    at = time.time() if received_at is None else received_at
    writer.append(
        Batch(
            request_ids=request_ids,
            row_counts=[1] * len(request_ids),
            received_at=[at + i * 1e-3 for i in range(len(request_ids))],
            model_name=MODEL_NAME,
            model_version=version,
            rows=[tuple(r[f] for f in features) for r in records],
            probabilities=p,
            labels=(p >= threshold).astype(np.int64),
        )
    )
    writer.close()


def alert_rules() -> list[dict[str, Any]]:
    """The alert rules of every file in RULE_FILES."""
    groups = [g for path in RULE_FILES for g in yamlfile.safe_load(path.read_text())["groups"]]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def labelled_project(
    root: Path,
    rows: int,
    labelled: int,
    overrides: dict[str, Any] | None = None,
    outcome: int | None = None,
    with_model: bool = True,
) -> tuple[Project, Any, list[str]]:
    """A project whose monitor store holds ``rows`` logged live rows, the first ``labelled``
    of them with their true outcome (or all with ``outcome``)."""
    from plumbline.core.contract import load_contract
    from plumbline.monitoring.monitor import Monitor
    from plumbline.monitoring.settings import load_params
    from plumbline.monitoring.store import Outcome

    project = Project(root, overrides or {}, with_model=with_model)
    params = load_params(project.params)
    contract = load_contract(REPO / "contracts/bank_marketing.yaml")
    monitor = Monitor(params, contract, project.root)
    records, ys = live_records(0, rows)
    ids = [f"live-{i}" for i in range(rows)]
    write_log(monitor.log_dir, ids, records, [0.5] * rows, "1")
    monitor.refresh()
    monitor.feedback(
        [
            Outcome(rid, 0, int(y == "yes") if outcome is None else outcome)
            for rid, y in list(zip(ids, ys, strict=True))[:labelled]
        ]
    )
    return project, monitor, ys
