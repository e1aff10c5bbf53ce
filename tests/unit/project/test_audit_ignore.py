"""deploy/audit/ignore.txt: every accepted vulnerability carries its reason."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from support.paths import REPO, load_script


def _runner() -> ModuleType:
    return load_script(REPO / "deploy/audit/run.py")


def test_the_shipped_ignore_list_parses() -> None:
    accepted = _runner().ignored()
    assert all(reason.strip() for reason in accepted.values())


def test_an_entry_needs_a_reason_and_the_error_names_its_line(tmp_path: Path) -> None:
    runner = _runner()
    listed = tmp_path / "ignore.txt"
    listed.write_text("# comment\nGHSA-aaaa-bbbb-cccc  no fix released; the API is unused\n")
    assert runner.ignored(listed) == {"GHSA-aaaa-bbbb-cccc": "no fix released; the API is unused"}
    listed.write_text("# comment\n\nPYSEC-2024-1\n")
    with pytest.raises(SystemExit, match=r"ignore.txt:3: '<id>  <reason>' expected"):
        runner.ignored(listed)
