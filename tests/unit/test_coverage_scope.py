"""Which test subprocesses go unmeasured, with all they start (tests/support/coverage_scope),
and the two pieces of coverage.py that the scope relies on."""

from __future__ import annotations

import coverage
import pytest
from support.coverage_scope.sitecustomize import unmeasured

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
        [f"{VENV}/python", "-W", "ignore", "-m", "plumbline", "gate"],
        [f"{VENV}/python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"],
        [f"{VENV}/python", f"{VENV}/mlflow", "models", "serve", "-m", "models:/x@champion"],
        [f"{VENV}/python", "-m", "plumbline.bootstrap"],
    ],
)
def test_plumbline_processes_are_measured(argv: list[str]) -> None:
    assert not unmeasured(argv)


def test_coverage_still_has_what_the_scope_uses() -> None:
    """Coverage.current() finds the auto-started instance; _auto_save (private, what coverage
    sets in a forked child) stops it writing at exit. An upgrade that drops either fails here."""
    assert callable(coverage.Coverage.current)
    cov = coverage.Coverage(data_file=None)
    assert isinstance(cov._auto_save, bool)
