"""Coverage only where it pays: on every test subprocess's PYTHONPATH.

``[tool.coverage.run] patch = ["subprocess"]`` starts coverage in every Python process the
tests start, through a .pth file, before this module runs. Here it is stopped (and told not to
save) in other projects' programs, which never import plumbline and only run slower traced:
the schemathesis fuzzer, the MLflow tracking server, and DVC with everything it starts. The
pipeline stages that DVC runs are left out too: each stage's code is measured in-process (its
CLI handler on real data in test_stage_deps.py, its functions in the unit tier), and traced as
a subprocess the import-heavy stages ran up to twice as long. The servers, the monitor and
``python -m plumbline`` started by the tests are measured as before.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

UNMEASURED = frozenset({"dvc", "schemathesis", "st"})


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """The script's or ``-m`` module's name, and the arguments after it."""
    args = argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "-m" and args:
            return args[0].split(".")[0], args[1:]
        if arg in ("-c", "-"):
            return "", args
        if arg in ("-X", "-W") and args:  # options with a separate value
            args.pop(0)
            continue
        if not arg.startswith("-"):
            return Path(arg).name, args
    return "", []


def unmeasured(argv: list[str]) -> bool:
    """Whether the process started as ``argv`` is one of the programs above."""
    program, args = _program(argv)
    # `mlflow server`, and the web server processes it starts for its app.
    return (
        program in UNMEASURED
        or (program == "mlflow" and args[:1] == ["server"])
        or any(a.startswith("mlflow.server") for a in argv)
    )


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


if os.environ.get("COVERAGE_PROCESS_CONFIG") and unmeasured(sys.orig_argv):
    _stop_coverage()
    # Nor in what it starts (DVC's stages, the fuzzer's and MLflow's own processes).
    del os.environ["COVERAGE_PROCESS_CONFIG"]
