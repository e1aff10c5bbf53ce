"""Coverage only where it pays: on every test subprocess's PYTHONPATH.

``[tool.coverage.run] patch = ["subprocess"]`` starts coverage in every Python process the
tests start, through a .pth file, before this module runs. Here it is stopped (and told not to
save) in other projects' programs, which never import plumbline and only run slower traced:
the schemathesis fuzzer, the MLflow tracking server, and DVC with everything it starts. The
pipeline stages that DVC runs are left out too: each stage's code is measured in-process (its
CLI handler on real data in test_stage_deps.py, its functions in the unit tier), and traced as
a subprocess the import-heavy stages ran up to twice as long. The servers, the monitor and
``python -m plumbline`` started by the tests are measured as before, unless the process would
import another copy of plumbline than this checkout's (a retrain workspace's or a test
project's ``src/``): the report counts this checkout's files only, so tracing a copy measures
nothing.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder
from pathlib import Path

UNMEASURED = frozenset({"dvc", "schemathesis", "st"})
CHECKOUT_SRC = Path(__file__).resolve().parents[3] / "src"


def _entry(argv: list[str]) -> tuple[str, str, list[str]]:
    """How the interpreter was told what to run: ("-m", module), ("script", path) or ("-c",
    "") for -c, stdin and none, with the arguments after it."""
    args = argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "-m" and args:
            return "-m", args[0], args[1:]
        if arg in ("-c", "-"):
            return "-c", "", args
        if arg in ("-X", "-W") and args:  # options with a separate value
            args.pop(0)
            continue
        if not arg.startswith("-"):
            return "script", arg, args
    return "-c", "", []


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """The script's or ``-m`` module's name, and the arguments after it."""
    kind, target, args = _entry(argv)
    if kind == "-m":
        return target.split(".")[0], args
    return (Path(target).name if kind == "script" else ""), args


def unmeasured(argv: list[str]) -> bool:
    """Whether the process started as ``argv`` is one of the programs above."""
    program, args = _program(argv)
    # `mlflow server`, and the web server processes it starts for its app.
    return (
        program in UNMEASURED
        or (program == "mlflow" and args[:1] == ["server"])
        or any(a.startswith("mlflow.server") for a in argv)
    )


def _path0(argv: list[str], cwd: str) -> str:
    """What Python puts first on sys.path for ``argv``, after this module has run."""
    kind, target, _ = _entry(argv)
    return str((Path(cwd) / target).resolve().parent) if kind == "script" else cwd


def runs_a_copy(argv: list[str], cwd: str, path: list[str]) -> bool:
    """Whether the process started as ``argv`` in ``cwd`` would import a plumbline package
    other than this checkout's (searching ``path`` after its first entry)."""
    spec = PathFinder.find_spec("plumbline", [_path0(argv, cwd), *path])
    if spec is None or spec.origin is None:
        return False
    return not Path(spec.origin).resolve().is_relative_to(CHECKOUT_SRC)


def _stop_coverage() -> None:
    try:
        import coverage
    except ImportError:  # an environment without coverage (the serving image's venv)
        return
    current = coverage.Coverage.current()
    if current is None:
        return
    current.stop()
    # What coverage itself does in a forked child that must not save: no data file at exit.
    current._auto_save = False


if os.environ.get("COVERAGE_PROCESS_CONFIG"):
    if unmeasured(sys.orig_argv):
        _stop_coverage()
        # Nor in what it starts (DVC's stages, the fuzzer's and MLflow's own processes).
        del os.environ["COVERAGE_PROCESS_CONFIG"]
    elif runs_a_copy(sys.orig_argv, os.getcwd(), sys.path):
        _stop_coverage()
