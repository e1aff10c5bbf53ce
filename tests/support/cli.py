"""Running ``plumbline`` (in this process, or as a user's shell would) and other commands."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

from plumbline.cli import main as cli

# Commits made by tests (report diffs, DVC experiments) need an identity on a fresh machine.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Plumbline Tests",
    "GIT_COMMITTER_NAME": "Plumbline Tests",
    "GIT_AUTHOR_EMAIL": "tests@plumbline.invalid",
    "GIT_COMMITTER_EMAIL": "tests@plumbline.invalid",
}


def plumbline(*args: str) -> tuple[int, str, str]:
    """Run ``plumbline ARGS`` in this process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def ok(*args: str) -> str:
    code, out, err = plumbline(*args)
    assert code == 0, f"plumbline {' '.join(args)} exited {code}:\n{out}\n{err}"
    return out


def forget_mlflow_uris() -> None:
    """Unset MLflow's process-wide tracking and registry URIs, which an earlier in-process
    call may have set (``mlflow.set_registry_uri`` also exports MLFLOW_REGISTRY_URI), so that
    the next command resolves its store from the environment as a process of its own does."""
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI
        mlflow.set_registry_uri(None)


@contextmanager
def in_project(root: Path, store: str | None = None) -> Iterator[None]:
    """Run in-process commands as if from ``root`` (PLUMBLINE_ROOT, cwd, MLflow store)."""
    names = ("PLUMBLINE_ROOT", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {k: os.environ.get(k) for k in names}
    cwd = Path.cwd()
    forget_mlflow_uris()
    os.environ["PLUMBLINE_ROOT"] = str(root)
    os.environ["MLFLOW_TRACKING_URI"] = store or f"sqlite:///{root / 'mlflow.db'}"
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(cwd)
        forget_mlflow_uris()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_cli(
    *args: str,
    root: Path,
    store: str | None = None,
    check: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m plumbline ARGS`` as its own process, with the project root at ``root`` and
    MLflow at ``store`` (default: a SQLite file in ``root``)."""
    env = dict(
        os.environ,
        PLUMBLINE_ROOT=str(root),
        OMP_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=store or f"sqlite:///{root / 'mlflow.db'}",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("MLFLOW_REGISTRY_URI", None)  # the registry is the store's, as for a user
    done = subprocess.run(
        [sys.executable, "-m", "plumbline", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert done.returncode == 0, f"plumbline {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def command_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's tools first on PATH and a git identity."""
    env = dict(os.environ, **GIT_IDENTITY, DVC_NO_ANALYTICS="1", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PLUMBLINE_ROOT", None)
    return env


def run(
    cwd: Path,
    *argv: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> str:
    """Run a command (dvc, git, make ...) in ``cwd``; its stdout + stderr."""
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        env=env or command_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{output}")
    return output
