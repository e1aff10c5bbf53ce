"""The isolated git + DVC workspace an automatic retrain runs the real pipeline in.

A retrain must have the lineage of a manual run: a clean commit holding every input (code,
params, contract, the training window), then ``dvc repro`` writing dvc.lock, then gate and
promote. The serving checkout is never written; the workspace is a separate clone:

* **Project in git** (a checkout): ``git clone --shared`` of the project at its HEAD. The code
  the stages run is the clone's ``src/`` (``PYTHONPATH``), the same files dvc.yaml hashes.
* **Project outside git** (the compose stack's pipeline image: ``/workspace`` has no history):
  the project's pipeline files (dvc.yaml, params.yaml, contracts, DVC config and the installed
  ``plumbline`` package as ``src/plumbline``) are committed to a persistent snapshot repository
  ``<monitor.state_dir>/project-snapshot``, one commit per change of those files, and the
  workspace is cloned from it. Its commits are what lineage names there; the snapshot
  repository keeps them.

The retrain's input commit is kept as ``refs/plumbline/retrains/<id>`` in the repository the
workspace was cloned from (the project's, or the snapshot), with dvc.lock committed on top, so
``git show refs/plumbline/retrains/<id>`` shows exactly what trained the registered version.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from plumbline.core.errors import PlumblineError

log = logging.getLogger("plumbline.retrain")

DVC = [sys.executable, "-m", "dvc"]
SNAPSHOT_DIR = "project-snapshot"
RETRAIN_REF = "refs/plumbline/retrains"
# What a workspace outside git needs from the project: what dvc.yaml reads and runs.
SNAPSHOT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config")
SNAPSHOT_DIRS = ("contracts",)
IDENTITY = {
    "GIT_AUTHOR_NAME": "Plumbline retrain",
    "GIT_AUTHOR_EMAIL": "retrain@plumbline.invalid",
    "GIT_COMMITTER_NAME": "Plumbline retrain",
    "GIT_COMMITTER_EMAIL": "retrain@plumbline.invalid",
}


class WorkspaceError(PlumblineError):
    """The retrain workspace could not be made (git missing, no commit to start from, ...)."""


def git(cwd: Path, *args: str, check: bool = True) -> str:
    env = dict(os.environ, **IDENTITY, GIT_TERMINAL_PROMPT="0")
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise WorkspaceError(f"git {' '.join(args)}: {err}") from None
    if check and done.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def project_repo(root: Path) -> Path | None:
    """The project's own git checkout, if ``root`` is the top of one."""
    try:
        top = git(root, "rev-parse", "--show-toplevel", check=False)
    except WorkspaceError:
        return None
    if top and Path(top).resolve() == root.resolve():
        return root
    return None


def _package_dir() -> Path:
    import plumbline

    return Path(plumbline.__file__).resolve().parent


def _copy_tree(source: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )


def snapshot(root: Path, state_dir: Path) -> Path:
    """Commit the project's pipeline files to the snapshot repository (if they changed)."""
    repo = state_dir / SNAPSHOT_DIR
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q")
    for rel in SNAPSHOT_FILES:
        if (root / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, repo / rel)
    for rel in SNAPSHOT_DIRS:
        if (root / rel).is_dir():
            _copy_tree(root / rel, repo / rel)
    code = root / "src/plumbline"
    _copy_tree(code if code.is_dir() else _package_dir(), repo / "src/plumbline")
    if not (repo / ".dvc/config").is_file():
        subprocess.run(["dvc", "init", "-q", "--force"], cwd=repo, check=False, capture_output=True)
    # The outputs and DVC's own files stay out of the snapshot.
    (repo / ".gitignore").write_text("/data/\n/models/\n/reports/\n/logs/\n/mlflow.db\n")
    git(repo, "add", "-A")
    if git(repo, "status", "--porcelain"):
        git(repo, "commit", "-qm", f"snapshot of the project at {root}")
    return repo


@dataclass
class Workspace:
    path: Path
    origin: Path  # the repository it was cloned from
    base: str  # the commit it started from
    inputs: str = ""  # the commit holding the retrain's inputs (what trained the model)

    @classmethod
    def create(cls, path: Path, root: Path, state_dir: Path) -> Workspace:
        origin = project_repo(root) or snapshot(root, state_dir)
        base = git(origin, "rev-parse", "HEAD", check=False)
        if not base:
            raise WorkspaceError(f"{origin} has no commit to retrain from")
        path.parent.mkdir(parents=True, exist_ok=True)
        git(path.parent, "clone", "-q", "--shared", "--no-checkout", str(origin), str(path))
        git(path, "checkout", "-q", "--detach", base)
        cache = root / ".dvc/cache"
        if cache.is_dir() and (path / ".dvc").is_dir():
            # Outputs land in the project's content-addressed cache, so the retrain's dvc.lock
            # can be checked out later; the serving checkout's files are not touched.
            subprocess.run(
                [*DVC, "cache", "dir", "--local", str(cache.resolve())],
                cwd=path,
                check=False,
                capture_output=True,
            )
        return cls(path=path, origin=origin, base=base)

    def commit(self, message: str, *paths: str) -> str:
        git(self.path, "add", "--force", "--", *paths)
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def commit_outputs(self, message: str) -> str:
        """Commit dvc.lock and every tracked file the run changed (the ``cache: false``
        outputs, e.g. reports/metrics.json), as ``dvc repro`` leaves them."""
        git(self.path, "add", "--update")
        git(self.path, "add", "--force", "--", "dvc.lock")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def keep(self, name: str) -> str:
        """Record HEAD as ``refs/plumbline/retrains/<name>`` in the origin repository."""
        ref = f"{RETRAIN_REF}/{name}"
        git(self.path, "push", "-q", "--force", str(self.origin), f"HEAD:{ref}")
        return ref
