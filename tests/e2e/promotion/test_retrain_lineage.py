"""A retrain the monitor starts (Alertmanager's webhook, POST /alerts) goes through DVC and
leaves a registry version whose ``plumbline lineage`` chain is complete, and a prediction's
request id leads to its version's chain.

The project is a real git checkout of this repository on the small bank file; the serving
checkout stays untouched (``git status`` empty) while the retrain runs in its own workspace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.cli import in_project, ok
from support.cli import plumbline as cli_plumbline
from support.monitoring import MODEL_NAME, MonitorProcess, live_records, write_log
from support.params import deep_update
from support.project import commit_all, env_for, make_repo, sh

from plumbline.core import yamlfile

pytestmark = pytest.mark.slow

LIVE = 600


@dataclass
class GitProject:
    """What MonitorProcess needs of a project."""

    root: Path
    params: Path
    store: str


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> GitProject:
    root = make_repo(tmp_path_factory.mktemp("e2e") / "plumbline")
    params_path = root / "params.yaml"
    params = yamlfile.safe_load(params_path.read_text())
    deep_update(
        params,
        {
            "mlflow": {"model_name": MODEL_NAME},
            "gate": {
                "min_roc_auc": 0.0,
                "min_pr_auc": 0.0,
                "max_brier": 0.35,
                "max_regression": 1.0,
            },
            "monitor": {"interval_s": 1.0, "min_labelled_rows": 100, "drift": {"min_rows": 100}},
            "retrain": {
                "min_new_labels": 100,
                "window": {"live_rows": LIVE, "history_rows": 500, "min_live_rows": 100},
            },
        },
    )
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(root, "monitoring settings for the test")
    sh(root, "dvc", "repro")
    commit_all(root, "dvc.lock")
    gp = GitProject(root, params_path, f"sqlite:///{root / 'mlflow.db'}")
    with in_project(root, gp.store):  # set-up: the first champion, in this process
        ok("gate")
        ok("promote")
    return gp


def test_monitor_triggered_retrain_has_a_complete_lineage(project: GitProject) -> None:
    root = project.root
    log_dir = root / "logs/predictions"
    records, outcomes = live_records(0, LIVE)
    ids = [f"live-{i}" for i in range(LIVE)]
    write_log(log_dir, ids, records, [0.5] * LIVE, "1")
    with MonitorProcess(project) as monitor:  # type: ignore[arg-type]
        monitor.refresh()
        answer = monitor.feedback(
            [{"request_id": i, "outcome": y} for i, y in zip(ids, outcomes, strict=True)]
        )
        assert answer.status_code == 200, answer.text
        fired = {
            "status": "firing",
            "alerts": [{"status": "firing", "labels": {"alertname": "PlumblineDataDrift"}}],
        }
        started = monitor.post("/alerts", fired).json()
        assert started["outcome"] == "started", started
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            runs = monitor.status()["retrains"]
            if runs and runs[0]["status"] != "running":
                break
            time.sleep(2)
        else:
            raise AssertionError(f"the retrain did not finish:\n{monitor.log()}")
    run = runs[0]
    assert run["status"] in ("promoted", "rejected"), run
    version = run["version"]
    assert version == "2", run

    # The serving checkout was not written (logs/ and mlflow.db are gitignored; monitor-proc/
    # holds this test's monitor process log).
    assert sh(root, "git", "status", "--porcelain", "--", ".", ":(exclude)monitor-proc") == ""

    done = subprocess.run(
        [sys.executable, "-m", "plumbline", "lineage", version, "--json"],
        cwd=root,
        env=env_for(root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    chain = json.loads(done.stdout)  # stdout holds the JSON document alone
    missing = [link for link in chain["links"] if link["missing"]]
    assert chain["complete"] and not missing, missing
    links = {link["name"]: link["value"] for link in chain["links"]}
    # The trail names the monitor as the retrain's author, not the OS user of its process.
    assert links["governance"]["registered"].startswith("monitor (system) at ")
    if run["status"] == "promoted":
        assert links["governance"]["promoted"].startswith("monitor (system) at ")
    ref = links["git commit"]["retrain_ref"]
    assert ref.startswith("refs/plumbline/retrains/")
    # The model's commit is the retrain's input commit; dvc.lock is committed on top of it.
    assert links["git commit"]["sha"] == sh(root, "git", "rev-parse", f"{ref}^").strip()
    committed = sh(root, "git", "show", f"{ref}:params.yaml")
    assert yamlfile.safe_load(committed)["data"]["source"]["path"].endswith("window.csv")
    lock = yamlfile.safe_load(sh(root, "git", "show", f"{ref}:dvc.lock"))
    outs = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
    assert links["model"]["models/model.skops"] == outs["models/model.skops"]
    assert links["features"]["data/features/train.parquet"] == outs["data/features/train.parquet"]
    assert links["valid data"]["data/interim/valid.parquet"] == outs["data/interim/valid.parquet"]
    assert links["raw data"]["source"]["path"].endswith("retrain-window.csv")
    assert "train.seed" in links["params"]

    # A prediction answered by version 1 leads to version 1's chain (a manual promotion).
    with in_project(root, project.store):
        text = ok("lineage", "--request-id", "live-7")
        assert "live-7" in text and "MISSING" not in text, text
        code, out, err = cli_plumbline("lineage", "--request-id", "nope")
    assert code == 1 and "MISSING" in out + err and "not in the log" in out + err, out + err
