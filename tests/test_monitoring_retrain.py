"""Retraining: the window policy, one retrain at a time across processes, and what a failed or
rejected retrain leaves behind (the champion, a record, the metrics its alert fires on).

Live rows come from the late part of the real bank file, written to the prediction log by the
server's own PredictionLog code; the pipeline stages, gate and promote run for real against a
temporary SQLite MLflow store.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml
from monitoring_support import (
    REPO,
    MonitorProcess,
    Project,
    live_records,
    write_log,
)
from serve_support import metric_value

from plumbline.config import CsvSource, DataConfig, load_params
from plumbline.contract import Contract, load_contract
from plumbline.monitoring.monitor import Monitor, render
from plumbline.monitoring.retrain import (
    Retrainer,
    RetrainError,
    RetrainLock,
    build_window,
    window_contract,
    write_window,
)
from plumbline.monitoring.store import Outcome
from plumbline.paths import layout
from plumbline.stages import ingest


def labelled_project(
    root: Path, rows: int, labelled: int, overrides: dict | None = None, outcome: int | None = None
) -> tuple[Project, Monitor, list[str]]:
    """A project whose monitor store holds ``rows`` logged live rows, the first ``labelled``
    of them with their true outcome (or all with ``outcome``)."""
    project = Project(root, overrides or {})
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


def test_window_policy(tmp_path: Path) -> None:
    window_cfg = {
        "live_rows": 300,
        "history_rows": 1000,
        "max_history_per_live": 1.5,
        "min_live_rows": 100,
    }
    project, monitor, ys = labelled_project(
        tmp_path / "p", 400, 350, {"retrain": {"window": window_cfg}}
    )
    params, contract = monitor.params, monitor.contract
    window = build_window(params, contract, layout(project.root), monitor.store)
    # The newest 300 labelled rows (of 350), after min(1000, 1.5 * 300) history rows.
    assert (window.live_rows, window.history_rows) == (300, 450)
    assert window.live_train_rows == math.floor(0.8 * 750) - 450
    live = window.frame.tail(300)
    records, _ = live_records(50, 300)
    assert live["age"].tolist() == [r["age"] for r in records]
    assert live["euribor3m"].tolist() == [r["euribor3m"] for r in records]
    assert live["y"].tolist() == ys[50:350]
    assert live["duration"].isna().all()  # not logged by the server, not a feature
    history = pd.read_parquet(project.root / "data/interim/valid.parquet").tail(450)
    assert window.frame.head(450)["age"].tolist() == history["age"].tolist()

    # The window file reads back through the ingest stage without a single type error.
    raw = yaml.safe_load((REPO / "contracts/bank_marketing.yaml").read_text())
    features = contract.feature_columns(["duration"])
    derived = Contract.model_validate(window_contract(raw, features, "y"))
    write_window(window, contract, tmp_path / "window.csv")
    data = DataConfig(
        contract=tmp_path / "c.yaml", source=CsvSource(path=tmp_path / "window.csv", sep=",")
    )
    typed, record = ingest.ingest(data, derived, tmp_path)
    assert record.rows == 750 and record.cells_failing_type == 0
    assert typed["y"].tolist() == window.frame["y"].tolist()

    # History so long that the training split would hold no live row: refused.
    greedy = params.model_copy(
        update={
            "retrain": params.retrain.model_copy(
                update={
                    "window": params.retrain.window.model_copy(
                        update={"history_rows": 3000, "max_history_per_live": 10.0}
                    )
                }
            )
        }
    )
    with pytest.raises(RetrainError, match="would hold no live rows"):
        build_window(greedy, contract, layout(project.root), monitor.store)
    strict = params.model_copy(
        update={
            "retrain": params.retrain.model_copy(
                update={
                    "window": params.retrain.window.model_copy(
                        update={"live_rows": 400, "min_live_rows": 351}
                    )
                }
            )
        }
    )
    with pytest.raises(RetrainError, match="350 labelled live rows"):
        build_window(strict, contract, layout(project.root), monitor.store)


def test_one_retrain_at_a_time_across_processes(tmp_path: Path) -> None:
    project, monitor, _ = labelled_project(tmp_path / "p", 200, 200)
    # Without its history the retrain fails at once: enough to count how many start.
    (project.root / "data/interim/valid.parquet").unlink()
    lock_path = monitor.state_dir / "retrain.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from plumbline.monitoring.retrain import "
            f"RetrainLock; lock = RetrainLock(Path({str(lock_path)!r})); "
            "print(lock.acquire(), flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        assert not RetrainLock(lock_path).acquire()
        retrainer = Retrainer(
            monitor.params,
            monitor.contract,
            project.root,
            monitor.store,
            monitor.references,
            monitor.state_dir,
        )
        decision, _ = retrainer.request("test")
        assert decision.outcome == "busy"
        with MonitorProcess(project) as proc:
            alert = {
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {"alertname": "PlumblineDataDrift"}}],
            }
            import requests

            answer = requests.post(proc.url + "/alerts", json=alert, timeout=30).json()
            assert answer["outcome"] == "busy"
            assert (
                metric_value(proc.metrics(), "plumbline_retrain_triggers_total", outcome="busy")
                == 1
            )
            cli = subprocess.run(
                [sys.executable, "-m", "plumbline", "--params", str(project.params), "retrain"],
                env=proc.env(),
                cwd=project.root,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert cli.returncode == 1 and "busy" in cli.stderr
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert monitor.store.retrains() == []

    # Lock released: of many simultaneous requests exactly one starts.
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        outcomes.append(retrainer.request("concurrent")[0].outcome)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    retrainer.wait(60)
    assert outcomes.count("started") == 1, outcomes
    assert set(outcomes) <= {"started", "busy", "cooldown"}
    [run] = monitor.store.retrains()
    assert run.status == "failed" and "valid.parquet not found" in run.reason
    assert retrainer.request("after")[0].outcome == "cooldown"


def test_failed_retrain_keeps_the_champion_and_is_counted(tmp_path: Path) -> None:
    # Every live outcome negative: the window's test split (newest rows) holds one class,
    # so the featurize stage refuses it.
    project, monitor, _ = labelled_project(tmp_path / "p", 200, 200, outcome=0)
    project.promote_current()
    registry = project.registry()
    assert registry.alias_version("champion") == "1"
    done = subprocess.run(
        [sys.executable, "-m", "plumbline", "--params", str(project.params), "retrain"],
        env=MonitorProcess(project).env(),
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "retrain 1 failed: stage featurize failed" in done.stderr
    assert "holds only one class" in done.stderr
    assert registry.alias_version("champion") == "1"
    assert [v.version for v in registry.versions()] == ["1"]
    [run] = monitor.store.retrains()
    assert run.status == "failed" and run.live_rows == 200
    assert (Path(run.workdir) / "logs/featurize.log").is_file()
    text = render(monitor)[0].decode()
    assert metric_value(text, "plumbline_retrain_runs_total", result="failed") == 1
    assert metric_value(text, "plumbline_retrain_runs_total", result="promoted") == 0
    assert metric_value(text, "plumbline_retrain_last_failed") == 1  # PlumblineRetrainFailed


def test_a_retrain_the_gate_rejects_leaves_the_champion(tmp_path: Path) -> None:
    strict_gate = {"min_roc_auc": 0.99, "min_pr_auc": 0.0, "max_brier": 1.0, "max_regression": 1.0}
    project, monitor, _ = labelled_project(
        tmp_path / "p", 300, 300, {"retrain": {"gate": strict_gate}}
    )
    project.promote_current()
    registry = project.registry()
    retrainer = Retrainer(
        monitor.params,
        monitor.contract,
        project.root,
        monitor.store,
        monitor.references,
        monitor.state_dir,
    )
    decision, result = retrainer.request("test", background=False)
    assert decision.outcome == "started" and result is not None
    assert result.status == "rejected", result.reason
    assert "roc_auc" in result.reason and "below gate.min_roc_auc 0.99" in result.reason
    assert result.champion_before == result.champion_after == "1"
    assert registry.alias_version("champion") == "1"
    assert registry.alias_version("challenger") == result.version == "2"
    # The window's params: the project's, with its own data source and the retrain gate.
    work = yaml.safe_load((Path(result.workdir) / "params.yaml").read_text())
    assert work["gate"]["min_roc_auc"] == 0.99
    assert work["data"]["source"]["path"].endswith("window.csv")
    assert yaml.safe_load(project.params.read_text())["gate"]["min_roc_auc"] == 0.0
    text = render(monitor)[0].decode()
    assert metric_value(text, "plumbline_retrain_runs_total", result="rejected") == 1
    assert metric_value(text, "plumbline_retrain_last_failed") == 0
    # Not enough new labels since this retrain: the next request is refused.
    monitor.params = monitor.params.model_copy(
        update={"retrain": monitor.params.retrain.model_copy(update={"cooldown_s": 0})}
    )
    retrainer.params = monitor.params
    again, _ = retrainer.request("again")
    assert again.outcome == "not_enough_labels"
