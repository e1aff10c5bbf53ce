"""params.yaml and the contract file are validated before any work: a bad key stops the run
with a message naming it, and the CLI prints that message without a traceback."""

from __future__ import annotations

from pathlib import Path

import yaml
from support.cli import run_cli
from support.paths import BANK_CONTRACT, REPO

from plumbline.core import yamlfile


def test_plumbline_command_exits_1_on_a_typo(tmp_path: Path) -> None:
    params = yamlfile.safe_load((REPO / "params.yaml").read_text())
    params["data"]["contract"] = str(BANK_CONTRACT)
    params["train"]["logistic_regresion"] = params["train"].pop("logistic_regression")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_cli("--params", str(tmp_path / "params.yaml"), "check-config", root=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"plumbline check-config: error: {tmp_path / 'params.yaml'}: "
        "invalid configuration\n  train.logistic_regresion: unknown key\n"
    )
