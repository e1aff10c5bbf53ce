"""``make demo``: the closed loop on the shipped defaults and data, in one command.

Works in a temporary copy of the project's pipeline outputs (the ones ``make`` built; ``dvc
repro`` first if they are missing) with its own MLflow store, on free loopback ports, so the
working tree and ``mlflow.db`` are untouched:

1. the project's model (trained on the first 80 % of the file) is gated and promoted: v1;
2. the server (serve/app.py), the monitor, Prometheus and Alertmanager (Debian's binaries, the
   repository's monitoring/ configs with loopback targets) start; a user ``demo`` of role
   ``operator`` is made in the temporary project's governance database, and its token is what
   the replay, Alertmanager's webhook and the monitor's rollout decider authenticate with;
3. ``plumbline replay`` sends the last 20 % of the file (2010, mostly) in file order and posts
   each true outcome some seconds later;
4. the drift alerts fire, Alertmanager calls the monitor, which retrains once enough labels
   arrived, gates (``plumbline gate --retrain``: challenger vs champion on the same newest rows)
   and promotes; the server hot-reloads;
5. ``reports/loop/loop.json`` and ``loop.md`` with PNGs (:mod:`plumbline.monitoring.loopreport`).

Only timing settings, ports and paths differ from the shipped ``params.yaml`` and monitoring/
files, and each difference is recorded under ``overrides`` in loop.json;
:func:`check_overrides` refuses any change of a gate or retrain decision threshold.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from plumbline.core import yamlfile
from plumbline.core.errors import PlumblineError
from plumbline.core.paths import project_root

if TYPE_CHECKING:
    from plumbline.monitoring.settings import Params

# What the demo copies from the project: the pipeline's outputs and what reads them.
COPY = [
    "params.yaml",
    "dvc.yaml",
    "dvc.lock",
    "contracts",
    "data/raw",
    "data/interim/valid.parquet",
    "data/features",
    "models/model.skops",
    "models/model.json",
    "reports/metrics.json",
    "reports/ingest.json",
]
NEEDS_REPRO = ["data/interim/valid.parquet", "data/features", "models/model.skops"]

# params.yaml settings the demo may change: how fast things happen, ports and paths.
TIMING_PARAMS = frozenset(
    {
        "serve.poll_interval_s",
        "serve.prediction_log.rotate_s",
        "serve.prediction_log.flush_s",
        "serve.prediction_log.dir",
        "monitor.interval_s",
        "monitor.port",
        "monitor.state_dir",
        "monitor.report_dir",
        "monitor.prediction_log_dir",
        "retrain.cooldown_s",
        "retrain.timeout_s",
        "mlflow.tracking_uri",
    }
)
# Settings outside params.yaml the demo shortens (the replay, Prometheus, Alertmanager).
STACK_SETTINGS = frozenset(
    {
        "replay.rate",
        "replay.fast_rows",
        "replay.slow_rate",
        "replay.label_delay_s",
        "prometheus.scrape_interval",
        "prometheus.rules.for",
        "alertmanager.group_wait",
        "alertmanager.group_interval",
        "alertmanager.repeat_interval",
    }
)
# What decides whether a model is retrained or promoted: never changed by the demo.
DECISION_PREFIXES = (
    "gate",
    "retrain.gate",
    "retrain.comparison",
    "retrain.window",
    "retrain.min_new_labels",
    "retrain.trigger_alerts",
    "retrain.enabled",
    "monitor.drift",
    "monitor.estimate",
    "monitor.window_rows",
    "monitor.label_window_rows",
    "monitor.min_labelled_rows",
    "evaluate",
    "serve.threshold",
    "tune",
    "train",
    "featurize",
)

# The demo's own settings: (value, what the shipped configuration has).
DEFAULTS: dict[str, Any] = {
    "serve.poll_interval_s": 2.0,
    "serve.prediction_log.rotate_s": 5.0,
    "monitor.interval_s": 5.0,
    # A rejected retrain (too little evidence on its window) may be retried with more labels
    # within the run; retrain.min_new_labels (a decision setting) still applies.
    "retrain.cooldown_s": 30.0,
    "replay.rate": 30.0,
    "replay.fast_rows": 3000,
    "replay.slow_rate": 16.0,
    "replay.label_delay_s": 5.0,
    "prometheus.scrape_interval": "5s",
    "prometheus.rules.for": "30s",
    "alertmanager.group_wait": "5s",
    "alertmanager.group_interval": "10s",
    "alertmanager.repeat_interval": "20s",
}


# Wall time the demo waits for a retrain that is still running after the replay, counted
# from its start (the limit is 10 minutes on two cores).
BUDGET_S = 480.0


class DemoError(PlumblineError):
    """The demo cannot run as asked (a refused override, a missing tool, a failed step)."""


def check_overrides(overrides: dict[str, Any]) -> None:
    """Refuse any setting that is not a timing, a port or a path; name a decision threshold
    explicitly (the demo must show the loop on the shipped decisions)."""
    for key in overrides:
        if any(key == p or key.startswith(p + ".") for p in DECISION_PREFIXES):
            raise DemoError(
                f"{key}: the demo may not override gate or retrain decision thresholds "
                "(only timing settings, ports and paths)"
            )
        if key not in TIMING_PARAMS and key not in STACK_SETTINGS:
            raise DemoError(
                f"{key}: not a timing setting, port or path the demo may change "
                f"(allowed: {', '.join(sorted(TIMING_PARAMS | STACK_SETTINGS))})"
            )


def _get(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def shipped_values(root: Path) -> dict[str, Any]:
    """What the shipped configuration says for each setting the demo may change."""
    params = yamlfile.safe_load((root / "params.yaml").read_text())
    prom = yamlfile.safe_load((root / "monitoring/prometheus.yml").read_text())
    am = yamlfile.safe_load((root / "monitoring/alertmanager.yml").read_text())
    rules = yamlfile.safe_load((root / "monitoring/rules/plumbline.rules.yml").read_text())
    pending = sorted(
        {r["for"] for g in rules["groups"] for r in g["rules"] if "for" in r},
        key=lambda s: (len(s), s),
    )
    out: dict[str, Any] = {k: _get(params, k) for k in TIMING_PARAMS}
    out.update(
        {
            "replay.rate": None,
            "replay.fast_rows": None,
            "replay.slow_rate": None,
            "replay.label_delay_s": None,
            "prometheus.scrape_interval": prom["global"].get("scrape_interval"),
            "prometheus.rules.for": "per rule: " + ", ".join(pending),
            "alertmanager.group_wait": am["route"].get("group_wait"),
            "alertmanager.group_interval": am["route"].get("group_interval"),
            "alertmanager.repeat_interval": am["route"].get("repeat_interval"),
        }
    )
    return out


def overrides_record(root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Every setting that differs from the shipped configuration: {key: {shipped, demo}}."""
    check_overrides(settings)
    shipped = shipped_values(root)
    return {
        k: {"shipped": shipped.get(k), "demo": v}
        for k, v in sorted(settings.items())
        if shipped.get(k) != v
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """The processes of one demo run; each in its own process group, all stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = dict(
            os.environ,
            PLUMBLINE_ROOT=str(root),
            OMP_NUM_THREADS="1",
            MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
            PYTHONUNBUFFERED="1",
        )
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def start(self, name: str, argv: list[str], health: str) -> None:
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        self._wait_http(health, proc, log)
        print(f"  {name} ready ({health})", flush=True)

    @staticmethod
    def _wait_http(
        url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180
    ) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(f"{url}: process exited:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise DemoError(f"{url} not ready in {timeout:.0f}s:\n{log.read_text()[-3000:]}")

    def plumbline(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "plumbline", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if check and done.returncode != 0:
            raise DemoError(f"plumbline {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def stop(self) -> list[str]:
        """SIGTERM each process group (the server's workers, a retrain's stages too), then
        SIGKILL what is left; returns the names of those that had to be killed."""
        killed = []
        for name, proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                killed.append(name)
            with contextlib.suppress(ProcessLookupError):  # children that outlived their parent
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return killed


DEMO_USER = "demo"


def demo_token(params: Params, root: Path) -> str:
    """A personal token of role operator for the demo's processes, in the temporary project's
    governance database (the monitor's write routes and the server's admin routes need one)."""
    from plumbline.governance.identity import Users
    from plumbline.governance.trail import AuditTrail

    trail = AuditTrail.for_project(params.audit, root)
    try:
        return Users(trail.engine).add(DEMO_USER, "operator")[1]
    finally:
        trail.close()


def webhook_credentials(config: Path, token: str) -> None:
    """Alertmanager's webhooks in ``config`` send ``token`` as their bearer credential, read
    from a file beside it (as the shipped configuration reads its own)."""
    token_file = config.parent / "monitor-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    data = yamlfile.safe_load(config.read_text())
    for receiver in data["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook.setdefault("http_config", {})["authorization"] = {
                "type": "Bearer",
                "credentials_file": str(token_file),
            }
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def prepare(project: Path, root: Path, settings: dict[str, Any]) -> None:
    """Copy the pipeline outputs into ``root`` and write its params.yaml with the demo's
    timing settings (checked by :func:`check_overrides`)."""
    missing = [rel for rel in NEEDS_REPRO if not (project / rel).exists()]
    if missing:
        print(f"pipeline outputs missing ({', '.join(missing)}): running dvc repro", flush=True)
        subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, check=True)
    for rel in COPY:
        src = project / rel
        if not src.exists():
            raise DemoError(f"{src} is missing: run `make` (or `dvc repro`) first")
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    check_overrides(settings)
    params = yamlfile.safe_load((root / "params.yaml").read_text())
    for key, value in settings.items():
        if key in TIMING_PARAMS:
            _set(params, key, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# --- what happened --------------------------------------------------------------------------


def alert_timeline(prometheus: str, start: float, end: float) -> dict[str, Any]:
    """When each alert first fired (seconds after the replay started), from ALERTS."""
    import requests

    query = {
        "query": 'ALERTS{alertstate="firing"}',
        "start": str(start),
        "end": str(end),
        "step": "5s",
    }
    r = requests.get(prometheus + "/api/v1/query_range", timeout=30, params=query)
    out: dict[str, Any] = {}
    for series in r.json()["data"]["result"]:
        name = series["metric"]["alertname"]
        first = float(series["values"][0][0]) - start
        label = series["metric"].get("feature") or series["metric"].get("model_version") or ""
        entry = out.setdefault(name, {"first_firing_s": first, "series": []})
        entry["first_firing_s"] = min(entry["first_firing_s"], first)
        entry["series"].append(label)
    return out


def series(prometheus: str, metric: str, start: float, end: float) -> dict[str, list[list[float]]]:
    """A monitor gauge over the run, by model version: [[seconds after start, value], ...]."""
    import requests

    query = {
        "query": f'{metric}{{job="plumbline-monitor"}}',
        "start": str(start),
        "end": str(end),
        "step": "5s",
    }
    r = requests.get(prometheus + "/api/v1/query_range", timeout=30, params=query)
    out: dict[str, list[list[float]]] = {}
    for s in r.json()["data"]["result"]:
        version = s["metric"].get("model_version", "")
        out.setdefault(version, []).extend(
            [round(float(t) - start, 1), float(v)] for t, v in s["values"]
        )
    return out


def _labelled(root: Path) -> Any:
    import pandas as pd

    with sqlite3.connect(root / "logs/monitor/monitor.sqlite") as conn:
        return pd.read_sql_query(
            "SELECT p.*, f.outcome FROM predictions p JOIN feedback f USING (request_id, row) "
            "ORDER BY p.received_at, p.rowid",
            conn,
        )


def first_served(root: Path, start: float) -> dict[str, float]:
    """When each version answered its first logged request (seconds after start)."""
    with sqlite3.connect(root / "logs/monitor/monitor.sqlite") as conn:
        rows = conn.execute(
            "SELECT model_version, MIN(received_at) FROM predictions GROUP BY model_version"
        ).fetchall()
    return {str(v): round(float(t) - start, 1) for v, t in rows}


def before_after(root: Path, swap_version: str, model_name: str) -> dict[str, Any]:
    """Live metrics per version on the rows it served, both versions on the same post-swap
    rows, and the CBPE estimate of each on those rows next to the realised ROC AUC."""
    import numpy as np
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    from plumbline.core.contract import load_contract
    from plumbline.monitoring.cbpe import estimated_roc_auc
    from plumbline.monitoring.settings import load_params
    from plumbline.promotion.registry import Registry

    params = load_params(root / "params.yaml")
    contract = load_contract(root / params.data.contract)
    features = contract.feature_columns(params.featurize.exclude_columns)
    frame = _labelled(root)

    def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
        return {
            "rows": len(y),
            "positive_rate": float(y.mean()),
            "roc_auc": float(roc_auc_score(y, p)),
            "pr_auc": float(average_precision_score(y, p)),
            "brier": float(brier_score_loss(y, p)),
            "estimated_roc_auc": estimated_roc_auc(p),
        }

    out: dict[str, Any] = {"served": {}, "same_rows_after_swap": {}}
    for version, part in frame.groupby("model_version", sort=False):
        if part["outcome"].nunique() < 2:
            continue
        out["served"][str(version)] = metrics(
            part["outcome"].to_numpy(), part["probability"].to_numpy()
        )
    after = frame[frame["model_version"] == swap_version]
    if after["outcome"].nunique() < 2:  # the swap came too late for labelled traffic
        return out
    registry = Registry(model_name, f"sqlite:///{root / 'mlflow.db'}")
    for version in sorted(out["served"]):
        model = registry.load(version)
        p = model.predict_proba(after[features])[:, 1]
        out["same_rows_after_swap"][version] = metrics(after["outcome"].to_numpy(), p)
    return out


def estimate_reasons(status: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, str]:
    """Why an estimate was withheld, per version (from the monitor's /status samples)."""
    out: dict[str, str] = {}
    for s in [*history, status]:
        est = s.get("estimate") or {}
        if est and not est.get("available") and est.get("reason"):
            out[str(est["model_version"])] = est["reason"]
    return out


def run(out: Path, settings: dict[str, Any], keep: bool = False) -> dict[str, Any]:
    import requests

    from plumbline.monitoring import localstack, loopreport
    from plumbline.monitoring.settings import load_params

    project = project_root()
    for tool in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(tool) is None:
            raise DemoError(
                f"{tool} not found: `sudo apt-get install prometheus prometheus-alertmanager`"
            )
    record: dict[str, Any] = {"overrides": overrides_record(project, settings)}
    began = time.time()
    root = Path(tempfile.mkdtemp(prefix="plumbline-demo-"))
    print(f"working in {root}", flush=True)
    prepare(project, root, settings)
    params = load_params(root / "params.yaml")
    stack = Stack(root)
    token = demo_token(params, root)
    # The monitor's rollout decider reads the server's /admin/rollout with this variable's token.
    stack.env[params.serve.admin_token_env] = token
    samples: list[dict[str, Any]] = []
    try:
        for step in ("gate", "promote"):
            line = next(
                (
                    x
                    for x in stack.plumbline(step).splitlines()
                    if x.startswith(f"plumbline {step}:")
                ),
                "",
            )
            print(line, flush=True)
        api, mon, prom, am = (_free_port() for _ in range(4))
        stack.start(
            "server",
            [
                sys.executable,
                str(project / "serve/app.py"),
                "--params",
                str(root / "params.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(api),
            ],
            f"http://127.0.0.1:{api}/ready",
        )
        stack.start(
            "monitor",
            [
                sys.executable,
                "-m",
                "plumbline",
                "monitor",
                "--host",
                "127.0.0.1",
                "--port",
                str(mon),
            ],
            f"http://127.0.0.1:{mon}/health",
        )
        am_config = localstack.alertmanager(
            root / "am",
            f"http://127.0.0.1:{mon}",
            {
                k.removeprefix("alertmanager."): settings[k]
                for k in settings
                if k.startswith("alertmanager.")
            },
            source=project / "monitoring",
        )
        webhook_credentials(am_config, token)
        stack.start(
            "alertmanager",
            [
                "prometheus-alertmanager",
                f"--config.file={am_config}",
                f"--storage.path={root / 'am/data'}",
                f"--web.listen-address=127.0.0.1:{am}",
                "--cluster.listen-address=",
            ],
            f"http://127.0.0.1:{am}/-/ready",
        )
        prom_config = localstack.prometheus(
            root / "prom",
            {
                "plumbline-api": f"127.0.0.1:{api}",
                "plumbline-monitor": f"127.0.0.1:{mon}",
                "prometheus": f"127.0.0.1:{prom}",
            },
            alertmanager=f"127.0.0.1:{am}",
            interval=settings.get("prometheus.scrape_interval"),
            pending=settings.get("prometheus.rules.for"),
            source=project / "monitoring",
        )
        stack.start(
            "prometheus",
            [
                "prometheus",
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={root / 'prom/data'}",
                f"--web.listen-address=127.0.0.1:{prom}",
            ],
            f"http://127.0.0.1:{prom}/-/ready",
        )
        started = time.time()
        record["setup_s"] = round(started - began, 1)
        delay = settings["replay.label_delay_s"]
        fast_rows = int(settings["replay.fast_rows"])
        source = Path(getattr(params.data.source, "path", "data/raw/bank-additional-full.csv"))
        n_rows = sum(1 for _ in (root / source).open()) - 1  # minus the header
        first = int(n_rows * params.featurize.train_fraction)
        # Two parts: fast until the retrain can start (min_live_rows labels), then slower, so
        # that a retrain finishing on two loaded cores still leaves post-swap traffic.
        phases = [
            (first, fast_rows, settings["replay.rate"]),
            (first + fast_rows, None, settings["replay.slow_rate"]),
        ]
        summaries = []
        for n, (start_row, rows, rate) in enumerate(phases):
            print(
                f"replaying from row {start_row} at {rate:g} rows/s, outcomes after {delay:g}s",
                flush=True,
            )
            argv = [
                sys.executable,
                "-m",
                "plumbline",
                "replay",
                "--api",
                f"http://127.0.0.1:{api}",
                "--monitor",
                f"http://127.0.0.1:{mon}",
                # The row's own position: (row + 0.5) / rows survives float rounding.
                "--start",
                repr((start_row + 0.5) / n_rows),
                "--rate",
                str(rate),
                "--label-delay",
                str(delay),
                "--concurrency",
                "4",
                "--id-prefix",
                f"demo{n}",
                "--summary",
                str(root / f"replay-{n}.json"),
            ]
            if rows is not None:
                argv += ["--rows", str(rows)]
            replay = subprocess.Popen(
                argv,
                cwd=root,
                env=dict(stack.env, PLUMBLINE_TOKEN=token),
                stdout=(root / f"replay-{n}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            stack.procs.append((f"replay-{n}", replay))
            while replay.poll() is None:  # the monitor's view as it goes (estimate reasons)
                with contextlib.suppress(requests.RequestException):
                    samples.append(
                        requests.get(f"http://127.0.0.1:{mon}/status", timeout=30).json()
                    )
                time.sleep(5)
            print((root / f"replay-{n}.log").read_text().strip().splitlines()[-1], flush=True)
            summaries.append(json.loads((root / f"replay-{n}.json").read_text()))
        record["replay"] = {
            k: sum(int(x.get(k, 0)) for x in summaries)
            for k in ("rows", "ok_rows", "failed_requests", "feedback_posted", "feedback_failed")
        } | {"parts": summaries}
        record["replay_s"] = round(time.time() - started, 1)
        # A retrain may still run; the whole demo stays within its budget.
        deadline = time.monotonic() + max(0.0, BUDGET_S - (time.time() - began))
        while time.monotonic() < deadline:
            runs = requests.get(f"http://127.0.0.1:{mon}/status", timeout=30).json()["retrains"]
            if all(r["status"] != "running" for r in runs):
                break
            time.sleep(5)
        # The last log files and outcomes, then the scrapes that see them.
        time.sleep(2 * params.monitor.interval_s + params.serve.prediction_log.rotate_s)
        refreshed = requests.post(
            f"http://127.0.0.1:{mon}/refresh",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        refreshed.raise_for_status()  # the report below needs its answer
        status = refreshed.json()
        time.sleep(2 * float(str(settings["prometheus.scrape_interval"]).rstrip("s")))
        end = time.time()
        record["retrains"] = [
            {
                k: r[k]
                for k in (
                    "id",
                    "trigger",
                    "status",
                    "reason",
                    "version",
                    "champion_before",
                    "champion_after",
                    "live_rows",
                    "history_rows",
                )
            }
            | {
                "started_s": round(r["started_at"] - started, 1),
                "finished_s": round((r["finished_at"] or end) - started, 1),
            }
            for r in reversed(status["retrains"])
        ]
        promoted = [r for r in status["retrains"] if r["status"] == "promoted"]
        gate_json = None
        if promoted:
            gate_path = Path(promoted[-1]["workdir"]) / "reports/gate.json"
            if gate_path.is_file():
                gate_json = json.loads(gate_path.read_text())
        elif status["retrains"]:
            gate_path = Path(status["retrains"][0]["workdir"]) / "reports/gate.json"
            if gate_path.is_file():
                gate_json = json.loads(gate_path.read_text())
        record["retrain_gate"] = (
            {k: gate_json.get(k) for k in ("passed", "note", "comparison", "reasons")}
            if gate_json
            else None
        )
        prometheus = f"http://127.0.0.1:{prom}"
        record["alerts"] = alert_timeline(prometheus, started, end)
        record["first_served_s"] = first_served(root, started)
        record["series"] = {
            name: series(prometheus, f"plumbline_live_{name}", started, end)
            for name in ("roc_auc", "positive_rate", "predicted_positive_rate")
        }
        record["estimated"] = {
            "roc_auc": series(prometheus, "plumbline_live_estimated_roc_auc", started, end),
            "realised_roc_auc": record["series"]["roc_auc"],
            "withheld": estimate_reasons(status, samples),
            "test_ece": {
                str(v["model_version"]): v
                for v in [
                    {"model_version": k, "ece": e[-1][1]}
                    for k, e in series(prometheus, "plumbline_model_test_ece", started, end).items()
                    if e
                ]
            },
        }
        if promoted:
            record["before_after"] = before_after(
                root, promoted[-1]["version"], params.mlflow.model_name
            )
    finally:
        record["killed_at_stop"] = stack.stop()
        if keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    record["total_s"] = round(time.time() - began, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loop.json").write_text(json.dumps(record, indent=2) + "\n")
    written = loopreport.write(record, out)
    print(f"wrote {out / 'loop.json'} and {', '.join(str(p) for p in written)}", flush=True)
    return record


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    settings = dict(DEFAULTS)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise DemoError(f"--set {pair!r}: expected key=value")
        settings[key.strip()] = yamlfile.safe_load(value)
    check_overrides(settings)
    return settings
