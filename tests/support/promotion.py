"""Helpers for the promotion tests: a small project on the real bank sample, driven by the CLI.

The project lives in a temporary folder (PLUMBLINE_ROOT) and uses a temporary SQLite MLflow
store (MLFLOW_TRACKING_URI); nothing touches the repository's own store or outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from plumbline.core import yamlfile
from support.cli import ok
from support.params import set_params
from support.paths import BANK_CONTRACT, BANK_SMALL, REPO

# Loose enough for models trained on ~3,300 rows; the tests that need a failing gate set their own.
LOOSE_GATE = {"min_roc_auc": 0.55, "min_pr_auc": 0.2, "max_brier": 0.3, "max_regression": 0.05}


def write_base_project(root: Path) -> Path:
    """params.yaml on the small bank file, ingested and split; no model yet."""
    root.mkdir(parents=True, exist_ok=True)
    params = yamlfile.safe_load((REPO / "params.yaml").read_text())
    params["data"]["contract"] = str(BANK_CONTRACT)
    params["data"]["source"]["path"] = str(BANK_SMALL)
    params["gate"] = dict(LOOSE_GATE)
    # Each candidate is trained with exactly the params its test sets (the search is the tune
    # tests' subject): the tune stage writes the values as written.
    params["tune"]["trials"] = 0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.lock", root / "dvc.lock")  # provenance tags come from it
    return root


def use_project(monkeypatch: pytest.MonkeyPatch, project: Path, store: Path) -> None:
    monkeypatch.setenv("PLUMBLINE_ROOT", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.delenv("GITHUB_BASE_REF", raising=False)
    monkeypatch.chdir(project)


def prepare_data() -> None:
    """ingest + featurize (the contract suite of `validate` is tested elsewhere; its valid
    rows here are simply the ingested rows)."""
    ok("ingest")
    root = Path.cwd()
    (root / "data/interim").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "data/interim/ingested.parquet", root / "data/interim/valid.parquet")
    ok("featurize")


def train_candidate(project: Path, **params: Any) -> dict[str, float]:
    """Set params, (re)featurize when the feature set changes, tune, train and evaluate."""
    if params:
        set_params(project, **params)
    if any(k.startswith("featurize.") for k in params):
        ok("featurize")
    ok("tune", "--no-mlflow")
    ok("train")
    ok("evaluate", "--no-mlflow")
    metrics: dict[str, float] = json.loads((project / "reports/metrics.json").read_text())
    return metrics


def gate_json(project: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((project / "reports/gate.json").read_text())
    return result
