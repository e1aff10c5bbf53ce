"""Where the repository and its real data are."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
BANK_SMALL = REPO / "data/raw/bank-additional.csv"  # 4,119 real rows, random order
BANK_FULL = REPO / "data/raw/bank-additional-full.csv"  # 41,188 rows, time order
BANK_CONTRACT = REPO / "contracts/bank_marketing.yaml"
MONITORING = REPO / "monitoring"
APP = REPO / "serve" / "app.py"


def dev_tool(name: str) -> str:
    """A command-line tool of the dev dependencies: beside this interpreter (the venv), else
    on PATH. Missing is a broken install, never a reason to skip."""
    import shutil
    import sys

    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -c requirements.lock -e '.[dev]'"
    return found


def tracked_files() -> list[str]:
    """The files git has or would add in this checkout (what a commit of it would hold)."""
    import subprocess

    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


def load_script(path: Path) -> ModuleType:
    """A script of the repository that is no package module (.ci/, deploy/, serve/), loaded
    as a module so that its functions can be tested in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
