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


def test_the_audit_runs_strict_on_the_lock_and_passes_each_accepted_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = _runner()
    ran: list[list[str]] = []

    class Done:
        returncode = 1

    def run(command: list[str], **kwargs: object) -> Done:
        ran.append(command)
        return Done()

    monkeypatch.setattr(runner, "reachable", lambda: True)
    monkeypatch.setattr(runner, "ignored", lambda: {"GHSA-aaaa-bbbb-cccc": "unused API"})
    monkeypatch.setattr(runner.subprocess, "run", run)
    assert runner.main([]) == 1  # a finding fails, whatever --if-reachable says
    (command,) = ran
    assert {"--strict", "--no-deps", "--disable-pip"} <= set(command)
    assert command[command.index("--requirement") + 1].endswith("requirements.lock")
    assert command[command.index("--ignore-vuln") + 1] == "GHSA-aaaa-bbbb-cccc"


def test_an_unreachable_database_is_said_and_fails_unless_if_reachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = _runner()
    monkeypatch.setattr(runner, "reachable", lambda: False)
    assert runner.main([]) == 2
    assert "was NOT audited" in capsys.readouterr().err
    assert runner.main(["--if-reachable"]) == 0
