"""Throwaway git + DVC projects for the reproducibility, dependency and retrain tests.

``make_repo`` commits a copy of this project's tracked files (this worktree's state, committed
or not) into a new git repository, pointed at the small bank file, so tests can clone it and
run what a user runs: ``git clone``, ``dvc repro``, ``make``, ``dvc push`` / ``dvc pull``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from plumbline.core import yamlfile
from support.cli import command_env, run
from support.mlflowstore import new_store
from support.params import set_params
from support.paths import REPO, tracked_files

STAGES = ["ingest", "validate", "featurize", "tune", "train", "evaluate"]
SMALL = "data/raw/bank-additional.csv"


def env_for(project: Path, **extra: str) -> dict[str, str]:
    """The user's environment in ``project``: the venv's tools, a git identity, the project's
    own MLflow store."""
    env = command_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def sh(cwd: Path, *args: str, check: bool = True, timeout: float = 900, **env: str) -> str:
    """``args`` in ``cwd`` as a user of that project runs them; stdout + stderr."""
    return run(cwd, *args, env=env_for(cwd, **env), check=check, timeout=timeout)


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def make_repo(root: Path, small: bool = True) -> Path:
    """A git repository holding this project's files (one commit on ``main``); with ``small``,
    only the 4,119-row bank file as raw data, and params pointing at it. No dvc.lock: the
    caller's first ``dvc repro`` writes the one this commit reproduces."""
    for rel in tracked_files():
        if rel.startswith("tests/") or rel == "dvc.lock":
            continue
        if small and rel.startswith("data/raw/") and rel.endswith(".csv") and rel != SMALL:
            continue
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    if small:
        set_params(root, **{"data.source.path": SMALL})
    new_store(root / "mlflow.db")  # gitignored, as a user's store is
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project")
    return root


def lock_outs(project: Path) -> dict[str, str]:
    """path -> md5 of every output (outs, metrics, plots) recorded in dvc.lock."""
    lock = yamlfile.safe_load((project / "dvc.lock").read_text())
    out: dict[str, str] = {}
    for stage in lock["stages"].values():
        for entry in stage.get("outs") or []:
            out[entry["path"]] = entry["md5"]
    return dict(sorted(out.items()))


def commit_all(project: Path, message: str) -> str:
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", message)
    return sh(project, "git", "rev-parse", "HEAD").strip()
