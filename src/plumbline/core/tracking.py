"""MLflow set-up: where runs go, and the provenance every run carries.

Default store: SQLite inside the project (``mlflow.db``) with artifacts in ``mlartifacts/``,
both gitignored. ``MLFLOW_TRACKING_URI`` (or ``mlflow.tracking_uri`` in params) points
elsewhere, e.g. a shared tracking server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from plumbline.core import yamlfile
from plumbline.core.paths import home_root
from plumbline.core.settings import MlflowConfig

log = logging.getLogger(__name__)


def tracking_uri(cfg: MlflowConfig, root: Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.tracking_uri:
        return cfg.tracking_uri
    return f"sqlite:///{home_root(root) / 'mlflow.db'}"


def artifact_location(root: Path) -> str:
    return (home_root(root) / "mlartifacts").as_uri()


def configure(cfg: MlflowConfig, root: Path) -> Any:
    """Point MLflow at the store and make sure the experiment exists; returns the module."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    uri = tracking_uri(cfg, root)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        location = artifact_location(root) if uri.startswith("sqlite:") else None
        mlflow.create_experiment(cfg.experiment, artifact_location=location)
    mlflow.set_experiment(cfg.experiment)
    return mlflow


def dvc_outputs(root: Path) -> list[str]:
    """Every path dvc.yaml declares as an output (outs, metrics, plots), relative to root."""
    import yaml

    try:
        spec = yamlfile.safe_load((root / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    found: list[str] = []
    for stage in (spec.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if isinstance(path, str) and "${" not in path:
                    found.append(path)
    return sorted(set(found))


IMAGE_COMMIT_ENV = "PLUMBLINE_GIT_COMMIT"


def git_commit(root: Path) -> str | None:
    """HEAD of the checkout at ``root``, with ``-dirty`` when tracked files differ from it.

    What DVC itself writes during ``dvc repro`` does not count: dvc.lock, and the outputs that
    dvc.yaml declares (the ``cache: false`` ones, such as reports/metrics.json, are tracked by
    git). They say nothing about the code and params that ran; a source change does.

    Outside a checkout (the pipeline image holds no git history) it is the commit the image was
    built from, ``$PLUMBLINE_GIT_COMMIT`` (the Dockerfile's ``GIT_COMMIT`` build argument), or
    None when that was not given.
    """
    built_from = os.environ.get(IMAGE_COMMIT_ENV) or None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return built_from
    if out.returncode != 0:
        return built_from
    commit = out.stdout.strip()
    excluded = [f":(exclude){path}" for path in ["dvc.lock", *dvc_outputs(root)]]
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def md5_file(path: Path) -> str:
    """The same MD5 that DVC records for a file output in dvc.lock."""
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_requirements(extra: list[str] | None = None) -> list[str]:
    """Pinned requirements of the logged model: what loading and scoring it needs; ``extra``:
    what the model's estimator needs beyond them (its booster library)."""
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "skops", "numpy", "pandas", "scipy")
    ] + list(extra or [])
