"""The pipeline as a user drives it: real `dvc repro`, `dvc exp run` and `dvc queue` in a copy
of this project, on a small real sample of the bank data. That two runs of one commit give
identical outputs (metrics included) is tests/integration/pipeline/test_reproducible.py's.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from support.mlflowstore import new_store
from support.params import set_params
from support.paths import REPO, tracked_files
from support.project import STAGES, ran_stages, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + DVC checkout of this project, pointed at a 3,000-row sample.

    The sample is the first 3,000 rows of the official 10% file plus three exact duplicates,
    so that the duplicate check has something to do.
    """
    root = tmp_path_factory.mktemp("clone") / "plumbline"
    for rel in tracked_files():
        if rel.startswith(("data/raw/", "reports/", "tests/")) or rel == "dvc.lock":
            continue
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    sample = pd.read_csv(REPO / "data/raw/bank-additional.csv", sep=";").head(3000)
    sample = pd.concat([sample, sample.iloc[[10, 20, 30]]], ignore_index=True)
    (root / "data/raw").mkdir(parents=True)
    sample.to_csv(root / "data/raw/sample.csv", sep=";", index=False)
    set_params(root, **{"data.source.path": "data/raw/sample.csv"})
    new_store(root / "mlflow.db")  # gitignored
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "config", "user.name", "Plumbline Tests")
    sh(root, "git", "config", "user.email", "tests@plumbline.invalid")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "sample project")
    return root


def test_repro_builds_everything_then_nothing_then_only_what_changed(project: Path) -> None:
    first = sh(project, "dvc", "repro")
    assert ran_stages(first) == STAGES
    for out in (
        "data/interim/ingested.parquet",
        "data/quarantine/quarantine.parquet",
        "data/features/train.parquet",
        "models/model.skops",
        "reports/metrics.json",
        "reports/figures/roc.png",
        "reports/data_docs/index.html",
    ):
        assert (project / out).is_file(), out
    validation = json.loads((project / "reports/validation.json").read_text())
    assert validation["rows_in"] == 3003
    assert validation["checks"] == {"duplicate": 3}
    assert validation["rows_valid"] + validation["rows_quarantined"] == validation["rows_in"]

    started = time.perf_counter()
    second = sh(project, "dvc", "repro")
    assert ran_stages(second) == []
    assert "up to date" in second
    assert time.perf_counter() - started < 30  # generous; the benchmark measures it properly

    # tune reads train: (the values as written are its first candidate).
    set_params(project, **{"train.logistic_regression.C": 0.25})
    third = sh(project, "dvc", "repro")
    assert ran_stages(third) == ["tune", "train", "evaluate"]

    # Only the search space: tune and what follows (the model card records the search).
    set_params(project, **{"tune.space.logistic_regression.C.high": 5.0})
    space = sh(project, "dvc", "repro")
    assert ran_stages(space) == ["tune", "train", "evaluate"]
    choice = json.loads((project / "reports/tune/best_params.json").read_text())
    assert choice["space"]["C"]["high"] == 5.0
    card = json.loads((project / "models/model.json").read_text())
    assert card["tuning"] == choice
    # Another estimator's space is not searched: tune reruns, its output is the same, so
    # nothing after it does.
    set_params(project, **{"tune.space.xgboost.max_depth.high": 7})
    other = sh(project, "dvc", "repro")
    assert ran_stages(other) == ["tune"]

    # A validation param that changes which rows pass reruns validate and everything after.
    set_params(project, **{"validate.check_duplicates": False})
    fourth = sh(project, "dvc", "repro")
    assert ran_stages(fourth) == ["validate", "featurize", "tune", "train", "evaluate"]
    validation = json.loads((project / "reports/validation.json").read_text())
    assert validation["rows_valid"] == 3003

    # One that changes no row reruns validate, and evaluate for the model card (which reads
    # reports/validation.json, where the threshold is recorded), but neither featurize nor
    # train: DVC sees identical valid rows.
    set_params(project, **{"validate.max_bad_fraction": 0.02})
    fifth = sh(project, "dvc", "repro")
    assert ran_stages(fifth) == ["validate", "evaluate"]

    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "tuned params")


def test_exp_run_with_a_param_override_and_exp_show(project: Path) -> None:
    out = sh(
        project, "dvc", "exp", "run", "-n", "strong-reg", "-S", "train.logistic_regression.C=0.01"
    )
    assert ran_stages(out) == ["tune", "train", "evaluate"]
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    experiments = _experiments(shown)
    assert "strong-reg" in experiments
    metrics = experiments["strong-reg"]
    assert 0.5 < metrics["roc_auc"] <= 1.0
    # The workspace keeps the experiment's result; restore the committed state.
    sh(project, "git", "checkout", "--", "params.yaml")
    sh(project, "dvc", "checkout", "--force")


def test_queued_sweep_of_three_experiments(project: Path) -> None:
    sh(project, "dvc", "exp", "run", "--queue", "-S", "train.logistic_regression.C=0.05,0.5,5")
    status = sh(project, "dvc", "queue", "status")
    assert status.count("Queued") == 3, status
    sh(project, "dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        # `dvc queue status` is a DVC process of its own: ask it only while no experiment runs.
        if _experiment_running(project):
            time.sleep(1)
            continue
        status = sh(project, "dvc", "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"queue did not finish:\n{status}")
    assert status.count("Success") == 3, status
    shown = _experiments(json.loads(sh(project, "dvc", "exp", "show", "--json")))
    swept = {
        round(m["params"]["train.logistic_regression.C"], 4)
        for m in shown.values()
        if "params" in m and m.get("roc_auc") is not None
    }
    assert {0.05, 0.5, 5.0} <= swept


def _experiment_running(project: Path) -> bool:
    """Whether a queued experiment of ``project`` is running (its `dvc exp exec-run`)."""
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if "exec-run" in (proc.info["cmdline"] or []) and str(project) in (proc.info["cwd"] or ""):
            return True
    return False


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """Name -> metrics (and params) from `dvc exp show --json`."""
    found: dict[str, dict] = {}
    for baseline in shown:
        for exp_range in baseline.get("experiments") or []:
            for rev in exp_range.get("revs", []):
                data = rev.get("data") or {}
                metrics = (
                    (data.get("metrics") or {}).get("reports/metrics.json", {}).get("data", {})
                )
                params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
                flat = dict(metrics)
                flat["params"] = {
                    "train.logistic_regression.C": params.get("train", {})
                    .get("logistic_regression", {})
                    .get("C"),
                }
                found[rev.get("name") or rev.get("rev")] = flat
    return found
