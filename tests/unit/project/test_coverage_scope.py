"""Which test subprocesses go unmeasured, with all they start (tests/support/coverage_scope),
and the two pieces of coverage.py that the scope relies on."""

from __future__ import annotations

import sys
from pathlib import Path

import coverage
import pytest
from support.coverage_scope.sitecustomize import runs_a_copy, unmeasured
from support.paths import REPO

VENV = "/venv/bin"


@pytest.mark.parametrize(
    "argv",
    [
        [f"{VENV}/python", f"{VENV}/dvc", "repro"],
        [f"{VENV}/python", "-m", "dvc", "queue", "status"],
        [f"{VENV}/python", "-X", "importtime", f"{VENV}/dvc", "repro"],
        [f"{VENV}/python", "-u", f"{VENV}/dvc", "exp", "exec-run", "--infofile", "x.run"],
        [f"{VENV}/python", f"{VENV}/schemathesis", "run", "http://127.0.0.1:1/openapi.json"],
        [f"{VENV}/python", f"{VENV}/mlflow", "server", "--port", "5000"],
        [f"{VENV}/python", "-m", "uvicorn", "mlflow.server.fastapi_app:app"],
    ],
)
def test_other_programs_are_not_measured(argv: list[str]) -> None:
    assert unmeasured(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [f"{VENV}/python", f"{VENV}/plumbline", "train"],
        [f"{VENV}/python", "-m", "plumbline", "--params", "p.yaml", "retrain"],
        [f"{VENV}/python", "serve/app.py", "--port", "8000"],
        [f"{VENV}/python", f"{VENV}/plumbline", "serve", "--port", "8000"],
        [f"{VENV}/python", "-W", "ignore", "-m", "plumbline", "gate"],
        [f"{VENV}/python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"],
        [f"{VENV}/python", f"{VENV}/mlflow", "models", "serve", "-m", "models:/x@champion"],
        [f"{VENV}/python", f"{VENV}/plumbline", "bootstrap"],
    ],
)
def test_plumbline_processes_are_measured(argv: list[str]) -> None:
    assert not unmeasured(argv)


def _copy_of_the_package(root: Path) -> Path:
    (root / "src/plumbline").mkdir(parents=True)
    (root / "src/plumbline/__init__.py").write_text("")
    return root


def test_a_process_that_imports_a_copy_of_plumbline_is_not_measured(tmp_path: Path) -> None:
    workspace = _copy_of_the_package(tmp_path / "workspace")
    gate = [f"{VENV}/python", "-m", "plumbline", "gate"]
    # A retrain's steps: the workspace's src/ first on PYTHONPATH.
    assert runs_a_copy(gate, str(workspace), [str(workspace / "src"), *sys.path])
    # `python -m` in a project whose root holds the package (a test project of make_repo).
    project = _copy_of_the_package(tmp_path / "project") / "src"
    assert runs_a_copy(gate, str(project), sys.path)


def test_a_process_that_imports_this_checkout_is_measured(tmp_path: Path) -> None:
    checkout = [p for p in sys.path if Path(p).resolve() == (REPO / "src").resolve()]
    assert checkout, "the editable install puts src/ on sys.path"
    gate = [f"{VENV}/python", "-m", "plumbline", "gate"]
    assert not runs_a_copy(gate, str(tmp_path), sys.path)
    script = [f"{VENV}/python", f"{VENV}/plumbline", "gate"]
    assert not runs_a_copy(script, str(_copy_of_the_package(tmp_path / "p") / "src"), sys.path)
    assert not runs_a_copy([f"{VENV}/python", "-c", "pass"], str(tmp_path), [])


def test_coverage_still_has_what_the_scope_uses() -> None:
    """Coverage.current() finds the auto-started instance; _auto_save (private, what coverage
    sets in a forked child) stops it writing at exit. An upgrade that drops either fails here."""
    assert callable(coverage.Coverage.current)
    cov = coverage.Coverage(data_file=None)
    assert isinstance(cov._auto_save, bool)
