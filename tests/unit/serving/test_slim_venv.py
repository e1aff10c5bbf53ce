"""serve/slim_venv.py removes files by the layout of the package versions it was checked with:
a move of any of them in requirements.lock fails here, so the slimmed image is checked again
(`make test-stack` serves from it) before the pins in TESTED move."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from support.paths import REPO, load_script


def _slim() -> ModuleType:
    return load_script(REPO / "serve/slim_venv.py")


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_the_locked_versions_are_the_tested_ones() -> None:
    locked = _locked()
    moved = {name: (tested, locked.get(name)) for name, tested in _slim().TESTED.items()}
    assert {n: v for n, v in moved.items() if v[0] != v[1]} == {}


def test_identical_library_copies_become_links(tmp_path: Path) -> None:
    slim = _slim()
    for name in ("libx.so", "libx.so.25", "libx.so.25.1"):
        (tmp_path / name).write_bytes(b"same bytes")
    (tmp_path / "liby.so").write_bytes(b"other bytes")
    assert slim.link_duplicates(tmp_path) == 2
    assert (tmp_path / "libx.so.25").readlink() == Path("libx.so")
    assert (tmp_path / "libx.so.25.1").read_bytes() == b"same bytes"
    assert not (tmp_path / "liby.so").is_symlink()
