"""``plumbline bootstrap``'s steps: with ``--outputs-only`` (the monitor's workspace on
Kubernetes) it lays out the project and runs `dvc repro`, and never gates or promotes."""

from __future__ import annotations

from pathlib import Path

import pytest

from plumbline.promotion import first_champion


def test_outputs_only_lays_out_and_reproduces_without_touching_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, root = tmp_path / "image", tmp_path / "workspace"
    (source / "contracts").mkdir(parents=True)
    (source / "dvc.yaml").write_text("stages: {}\n")
    (source / "contracts/c.yaml").write_text("name: c\n")
    ran: list[list[str]] = []

    def run(argv: list[str], root: Path, env: dict[str, str], check: bool = True) -> int:
        ran.append(argv[2:])  # without "<python> -m"
        return 0

    monkeypatch.setattr(first_champion, "_run", run)
    assert first_champion.bootstrap(root, source, outputs_only=True) is None
    assert (root / "contracts/c.yaml").read_text() == "name: c\n"
    assert ran == [["dvc", "config", "--local", "core.no_scm", "true"], ["dvc", "repro"]]
