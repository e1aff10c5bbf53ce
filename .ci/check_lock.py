"""Fail when the pipeline produced a dvc.lock other than the committed one, naming what changed.

Run after `dvc repro` in a clean clone: `python .ci/check_lock.py`. Exit 0 when dvc.lock is
what git has at HEAD; else 1 with one line per stage entry (dep, param, out) whose hash or
value differs, so the message says which output a commit failed to reproduce.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def entries(lock: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, stage in (lock.get("stages") or {}).items():
        out[f"{name}: cmd"] = str(stage.get("cmd"))
        for kind in ("deps", "outs"):
            for entry in stage.get(kind) or []:
                out[f"{name}: {kind[:-1]} {entry.get('path')}"] = str(entry.get("md5"))
        for file, values in (stage.get("params") or {}).items():
            for key, value in (values or {}).items():
                out[f"{name}: param {file}:{key}"] = repr(value)
    return out


def differences(committed: str, produced: str) -> list[str]:
    """One line per stage entry whose value differs between two dvc.lock texts."""
    old = entries(yaml.safe_load(committed) or {})
    new = entries(yaml.safe_load(produced) or {})
    return [
        f"  {key}: committed {old.get(key, '(none)')}, produced {new.get(key, '(none)')}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    committed = subprocess.run(
        ["git", "show", "HEAD:dvc.lock"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    produced = (root / "dvc.lock").read_text()
    if produced == committed:
        print("dvc.lock: the pipeline reproduced the committed lock")
        return 0
    print(
        "dvc.lock: the pipeline did not reproduce the committed lock; commit the dvc.lock that "
        "`dvc repro` writes, or make the changed outputs deterministic:",
        file=sys.stderr,
    )
    print(
        "\n".join(differences(committed, produced)) or "  (same hashes; formatting differs)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
