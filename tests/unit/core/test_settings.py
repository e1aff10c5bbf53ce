"""params.yaml and the contract file are validated before any work: a bad key stops the run
with a message naming it, and the CLI prints that message without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.paths import BANK_CONTRACT, REPO

from plumbline.cli.main import main
from plumbline.core import yamlfile
from plumbline.core.contract import ContractError, load_contract
from plumbline.core.settings import ConfigError, load_params


def real_params() -> dict[str, Any]:
    return yamlfile.safe_load((REPO / "params.yaml").read_text())


def write_params(tmp_path: Path, params: dict[str, Any]) -> Path:
    params["data"]["contract"] = str(BANK_CONTRACT)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_repo_params_and_contract_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.featurize.exclude_columns == ["duration"]  # it leaks the target
    assert load_contract(REPO / params.data.contract).target.column == "y"


def _typo(p: dict[str, Any]) -> None:
    p["train"]["logistic_regresion"] = p["train"].pop("logistic_regression")


def _wrong_type(p: dict[str, Any]) -> None:
    p["validate"]["max_bad_fraction"] = "lots"


def _source_typo(p: dict[str, Any]) -> None:
    p["data"]["source"]["seperator"] = ","


def _too_large(p: dict[str, Any]) -> None:
    p["featurize"]["train_fraction"] = 0.9


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_typo, "train.logistic_regresion: unknown key"),
        (_wrong_type, "validate.max_bad_fraction: Input should be a valid number"),
        (_wrong_type, "(got 'lots')"),
        # A key inside the source is named as written, without Pydantic's union tag ("csv").
        (_source_typo, "data.source.seperator: unknown key"),
        (_too_large, "featurize: Value error, train_fraction + test_fraction must be at most 1"),
    ],
)
def test_invalid_params_name_the_key(tmp_path: Path, edit: Any, expected: str) -> None:
    params = real_params()
    edit(params)
    path = write_params(tmp_path, params)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: invalid configuration")
    assert expected in str(err.value)


def test_unreadable_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot be read"):
        load_params(tmp_path)  # a directory
    (tmp_path / "broken.yaml").write_text("data: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "broken.yaml")


def contract_with(tmp_path: Path, edit: Any) -> Path:
    raw = yamlfile.safe_load(BANK_CONTRACT.read_text())
    edit(raw)
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["columns"]["age"].update(maximum=99), "columns.age.maximum: Extra inputs"),
        (lambda c: c["columns"]["age"].update(type="int"), "columns.age.type: Input should be"),
        (
            lambda c: c["columns"]["job"].update(categories=[]),
            "columns.job: Value error, a category column needs a non-empty 'categories' list",
        ),
        (
            lambda c: c["target"].update(positive="maybe"),
            "target.positive 'maybe' is not a category of 'y'",
        ),
        (lambda c: c.pop("rows_time_ordered"), "rows_time_ordered: Field required"),
    ],
)
def test_invalid_contract_names_the_key(tmp_path: Path, edit: Any, expected: str) -> None:
    path = contract_with(tmp_path, edit)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert f"contract file {path} is invalid" in str(err.value)
    assert expected in str(err.value)


def test_unreadable_contract_file(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="not found"):
        load_contract(tmp_path / "missing.yaml")
    with pytest.raises(ContractError, match="cannot be read"):
        load_contract(tmp_path)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("params_typo", "train.logistic_regresion: unknown key"),
        ("params_type", "validate.max_bad_fraction: Input should be a valid number"),
        ("contract_key", "columns.age.maximum: Extra inputs are not permitted"),
        ("contract_dir", "cannot be read"),
    ],
)
def test_cli_reports_config_errors_without_traceback(
    tmp_path: Path,
    case: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = real_params()
    if case == "params_typo":
        _typo(params)
    if case == "params_type":
        _wrong_type(params)
    path = write_params(tmp_path, params)
    if case.startswith("contract"):
        bad = (
            contract_with(tmp_path, lambda c: c["columns"]["age"].update(maximum=99))
            if case == "contract_key"
            else tmp_path
        )
        path.write_text(path.read_text().replace(str(BANK_CONTRACT), str(bad)))
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    # Every stage validates the configuration first, like check-config.
    command = "check-config" if case in ("params_typo", "contract_dir") else "ingest"
    assert main(["--params", str(path), command]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"plumbline {command}: error:")
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "data").exists()  # stopped before any work
