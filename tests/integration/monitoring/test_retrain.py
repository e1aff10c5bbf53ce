"""Retraining: the window policy, one retrain at a time across processes, and what a failed or
rejected retrain leaves behind (the champion, a record, the metrics its alert fires on).

Live rows come from the late part of the real bank file, written to the prediction log by the
server's own PredictionLog code; the pipeline stages, gate and promote run for real against a
temporary SQLite MLflow store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.monitoring import MonitorProcess, labelled_project
from support.serve import metric_value

from plumbline.core import yamlfile
from plumbline.monitoring.monitor import render
from plumbline.monitoring.retrain import (
    Retrainer,
    RetrainLock,
)

pytestmark = pytest.mark.slow


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
            answer = proc.post("/alerts", alert).json()
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
    work = yamlfile.safe_load((Path(result.workdir) / "params.yaml").read_text())
    assert work["gate"]["min_roc_auc"] == 0.99
    # The retrain gate compared both models on the window's test split; the verdict and the
    # retrain record state both values, the difference and its interval.
    verdict = json.loads((Path(result.workdir) / "reports/gate.json").read_text())
    roc = verdict["comparison"]["metrics"]["roc_auc"]
    assert roc["improvement"] == pytest.approx(roc["challenger"] - roc["champion"])
    assert roc["interval"][0] <= roc["improvement"] <= roc["interval"][1]
    figures = f"{roc['challenger']:.4f} vs champion version 1 {roc['champion']:.4f}"
    assert figures in verdict["note"] and figures in result.reason
    assert work["data"]["source"]["path"].endswith("window.csv")
    assert yamlfile.safe_load(project.params.read_text())["gate"]["min_roc_auc"] == 0.0
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
