"""Throwaway git + DVC projects for the reproducibility, dependency and retrain tests.

``make_repo`` commits a copy of this project's tracked files (this worktree's state, committed
or not) into a new git repository, pointed at the small bank file, so tests can clone it and
run what a user runs: ``git clone``, ``dvc repro``, ``make``, ``dvc push`` / ``dvc pull``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "validate", "featurize", "train", "evaluate"]
SMALL = "data/raw/bank-additional.csv"


def env_for(project: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    env.pop("PLUMBLINE_ROOT", None)
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "Plumbline Tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@plumbline.invalid"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def sh(cwd: Path, *args: str, check: bool = True, timeout: float = 900, **env: str) -> str:
    proc = subprocess.run(
        list(args),
        cwd=cwd,
        env=env_for(cwd, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} in {cwd} failed ({proc.returncode}):\n{output}")
    return output


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def set_param(project: Path, dotted: str, value: object) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


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
        set_param(root, "data.source.path", SMALL)
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project")
    return root


def lock_outs(project: Path) -> dict[str, str]:
    """path -> md5 of every output (outs, metrics, plots) recorded in dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    out: dict[str, str] = {}
    for stage in lock["stages"].values():
        for entry in stage.get("outs") or []:
            out[entry["path"]] = entry["md5"]
    return dict(sorted(out.items()))


def commit_all(project: Path, message: str) -> str:
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", message)
    return sh(project, "git", "rev-parse", "HEAD").strip()
