"""The closed loop on the real data: replay the late 2010 part of the bank file as live traffic.

Runs in a temporary copy of the project's pipeline outputs (``dvc repro`` first) with its own
MLflow store, on free loopback ports, so the working tree and ``mlflow.db`` are untouched:

1. the project's model (trained on the first 80 % of the file) is gated and promoted: v1;
2. the server (serve/app.py), the monitor (``plumbline monitor``), Prometheus and Alertmanager
   (Debian's binaries, the repository's monitoring/ configs with loopback targets and shorter
   pending times) start;
3. ``plumbline replay`` sends the last 20 % of the file (8,236 rows) in file order at
   ``--rate`` rows/s and posts each true outcome ``--label-delay`` seconds later;
4. the drift alerts fire, Alertmanager calls the monitor, which retrains once enough labels
   arrived (``retrain.window.min_live_rows``), gates and promotes; the server hot-reloads;
5. afterwards: the drift + live report (``plumbline drift-report``: drift.md, drift.png,
   live.png), and replay_loop.json with the alert timeline from Prometheus, the retrain runs,
   and live ROC AUC / PR AUC / Brier score of each version on the rows it served plus both
   versions scored on the same post-swap rows, all in ``--out``.

Usage: python benchmarks/replay_loop.py [--rate 30] [--label-delay 20] [--out docs/monitoring]
"""

from __future__ import annotations

import argparse
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
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
# The loopback copies of monitoring/ that the integration tests use, too.
sys.path.insert(0, str(REPO / "tests"))
from support import localstack  # noqa: E402

MODEL_NAME = "plumbline-classifier"
COPY = [
    "params.yaml",
    "dvc.yaml",
    "dvc.lock",
    "contracts",
    "data/raw/bank-additional-full.csv",
    "data/interim/valid.parquet",
    "data/features",
    "models",
    "reports/metrics.json",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: process exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready in {timeout}s:\n{log.read_text()[-3000:]}")


class Stack:
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

    def start(
        self, name: str, argv: list[str], health: str, env: dict[str, str] | None = None
    ) -> None:
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=env or self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append((name, proc))
        wait_http(health, proc, log)
        print(f"  {name} ready ({health})", flush=True)

    def plumbline(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "plumbline", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if check and done.returncode != 0:
            raise SystemExit(f"plumbline {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    print(f"  {name} did not stop; killing it", flush=True)
                    proc.kill()


def prepare(root: Path, args: argparse.Namespace) -> None:
    for rel in COPY:
        src = REPO / rel
        if not src.exists():
            raise SystemExit(f"{src} is missing: run `dvc repro` (or `dvc pull`) first")
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["serve"].update(poll_interval_s=2.0)
    params["serve"]["prediction_log"].update(rotate_s=5.0, flush_s=1.0)
    params["monitor"].update(interval_s=5.0)
    params["retrain"].update(cooldown_s=3600.0)
    # The gate's absolute floors were set for the original test split; on the shifted 2010
    # period no model reaches them (see docs/monitoring.md), so the automatic retrain is judged
    # by the champion comparison (gate.max_regression) with lower floors.
    params["retrain"]["gate"] = {
        "min_roc_auc": args.min_roc_auc,
        "min_pr_auc": 0.10,
        "max_brier": 0.25,
        "max_regression": 0.01,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def alert_timeline(prometheus: str, start: float, end: float) -> dict[str, Any]:
    """When each alert first fired (seconds after the replay started), from ALERTS."""
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


def before_after(root: Path, swap_version: str) -> dict[str, Any]:
    """Live metrics per version on the rows it served, and both versions on the same rows."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    from plumbline.contract import load_contract
    from plumbline.registry import Registry

    contract = load_contract(root / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(["duration"])
    with sqlite3.connect(root / "logs/monitor/monitor.sqlite") as conn:
        frame = pd.read_sql_query(
            "SELECT p.*, f.outcome FROM predictions p JOIN feedback f USING (request_id, row) "
            "ORDER BY p.received_at, p.rowid",
            conn,
        )

    def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return {
            "rows": len(y),
            "positive_rate": float(y.mean()),
            "roc_auc": float(roc_auc_score(y, p)),
            "pr_auc": float(average_precision_score(y, p)),
            "brier": float(brier_score_loss(y, p)),
        }

    out: dict[str, Any] = {"served": {}, "same_rows_after_swap": {}}
    for version, part in frame.groupby("model_version", sort=False):
        out["served"][str(version)] = metrics(
            part["outcome"].to_numpy(), part["probability"].to_numpy()
        )
    after = frame[frame["model_version"] == swap_version]
    store = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store  # models:/ downloads resolve through it
    registry = Registry(MODEL_NAME, store)
    for version in sorted(out["served"]):
        model = registry.load(version)
        p = model.predict_proba(after[features])[:, 1]
        out["same_rows_after_swap"][version] = metrics(after["outcome"].to_numpy(), p)
    return out


def drift_before_swap(root: Path, directory: Path, version: str) -> dict[str, Any]:
    """The drift report the monitor showed while ``version`` (the first champion) served:
    its newest ``monitor.window_rows`` rows against its training profile."""
    import pandas as pd

    from plumbline.config import load_params
    from plumbline.contract import load_contract
    from plumbline.monitoring.drift import DriftThresholds, compare, write_report

    params = load_params(root / "params.yaml")
    contract = load_contract(root / "contracts/bank_marketing.yaml")
    features = contract.feature_columns(params.featurize.exclude_columns)
    with sqlite3.connect(root / "logs/monitor/monitor.sqlite") as conn:
        window = pd.read_sql_query(
            "SELECT * FROM predictions WHERE model_version = ? ORDER BY received_at DESC, "
            "rowid DESC LIMIT ?",
            conn,
            params=[version, params.monitor.window_rows],
        )
    profile = json.loads((root / "data/features/reference_profile.json").read_text())
    card = json.loads((root / "models/model.json").read_text())
    cfg = params.monitor.drift
    report = compare(
        profile,
        window[features],
        DriftThresholds(cfg.psi, cfg.p_value, cfg.min_rows),
        card["score_profile"],
        window["probability"].to_numpy(),
    )
    write_report(
        report,
        directory,
        f"Drift: the last {len(window)} rows served by version {version} vs its training profile",
    )
    return report.to_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=30.0, help="rows per second")
    parser.add_argument("--label-delay", type=float, default=20.0, help="seconds")
    parser.add_argument(
        "--min-roc-auc",
        type=float,
        default=0.55,
        help="retrain.gate.min_roc_auc for the automatic retrain",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs/monitoring")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="plumbline-replay-"))
    print(f"working in {root}", flush=True)
    prepare(root, args)
    stack = Stack(root)
    result: dict[str, Any] = {"rate": args.rate, "label_delay_s": args.label_delay}
    try:
        for step in ("gate", "promote"):
            print(
                next(
                    line
                    for line in stack.plumbline(step).splitlines()
                    if line.startswith(f"plumbline {step}:")
                ),
                flush=True,
            )
        api, mon, prom, am = (free_port() for _ in range(4))

        stack.start(
            "server",
            [
                sys.executable,
                str(REPO / "serve/app.py"),
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
            {"group_wait": "5s", "group_interval": "10s", "repeat_interval": "20s"},
        )
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
            interval="5s",
            pending="30s",
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
        print(
            f"replaying at {args.rate:g} rows/s, outcomes after {args.label_delay:g}s ...",
            flush=True,
        )
        replay = stack.plumbline(
            "replay",
            "--api",
            f"http://127.0.0.1:{api}",
            "--monitor",
            f"http://127.0.0.1:{mon}",
            "--rate",
            str(args.rate),
            "--label-delay",
            str(args.label_delay),
            "--concurrency",
            "4",
            "--summary",
            str(root / "replay.json"),
            check=False,
        )
        print(replay)
        result["replay"] = json.loads((root / "replay.json").read_text())
        result["replay_seconds"] = time.time() - started
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:  # a retrain may still run
            runs = requests.get(f"http://127.0.0.1:{mon}/status", timeout=30).json()["retrains"]
            if runs and all(r["status"] != "running" for r in runs):
                break
            time.sleep(5)
        time.sleep(15)  # the last log files and outcomes
        status = requests.post(f"http://127.0.0.1:{mon}/refresh", timeout=120).json()
        result["retrains"] = [
            {
                k: r[k]
                for k in (
                    "id",
                    "trigger",
                    "status",
                    "reason",
                    "version",
                    "live_rows",
                    "history_rows",
                )
            }
            | {
                "started_s": r["started_at"] - started,
                "finished_s": (r["finished_at"] or 0) - started,
            }
            for r in status["retrains"]
        ]
        result["alerts"] = alert_timeline(f"http://127.0.0.1:{prom}", started, time.time())
        args.out.mkdir(parents=True, exist_ok=True)
        print(stack.plumbline("drift-report", "--output", str(root / "report")).strip())
        for name in ("drift.png", "live.png", "drift.md"):
            shutil.copy(root / "report" / name, args.out / name)
        promoted = [r for r in status["retrains"] if r["status"] == "promoted"]
        if promoted:
            result["before_after"] = before_after(root, promoted[0]["version"])
            before = drift_before_swap(root, root / "report-before", promoted[0]["champion_before"])
            shutil.copy(root / "report-before/drift.png", args.out / "drift-before.png")
            result["drift_before_swap"] = {
                "rows": before["rows"],
                "drifted": before["drifted_features"],
                "psi": {f["feature"]: round(f["psi"], 3) for f in before["features"]},
                "score_psi": before["score"]["psi"] if before["score"] else None,
            }
        (args.out / "replay_loop.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("retrains", "alerts")}, indent=2))
        print(json.dumps(result.get("before_after"), indent=2))
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
