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
from plumbline.core.settings import SECTIONS, ConfigError, ParamsView, parse_params
from plumbline.monitoring.settings import Params, load_params
from plumbline.pipeline.settings import PipelineParams
from plumbline.promotion.settings import PromotionParams
from plumbline.serving.settings import ServingParams


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


# --- settings per consumer -----------------------------------------------------------------

VIEWS = [PipelineParams, PromotionParams, ServingParams, Params]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_every_view_reads_the_shipped_params(view: type[ParamsView]) -> None:
    params = parse_params(real_params(), view)
    assert params.featurize.exclude_columns == ["duration"]
    assert set(view.sections) <= set(SECTIONS)


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_a_misspelt_section_is_refused_by_every_view(view: type[ParamsView]) -> None:
    raw = real_params()
    raw["trian"] = raw.pop("train")
    with pytest.raises(ConfigError, match="trian: unknown key"):
        parse_params(raw, view)


def test_the_pipeline_does_not_read_the_serving_or_monitoring_sections() -> None:
    raw = real_params()
    raw["serve"]["threshold"] = 7
    raw["monitor"]["no_such_key"] = 1
    raw["retrain"]["window"]["live_rows"] = -1
    pipeline = parse_params(raw, PipelineParams)
    assert not hasattr(pipeline, "serve") and not hasattr(pipeline, "monitor")
    # The gates read retrain.gate and retrain.comparison, not the monitor's retrain keys.
    assert parse_params(raw, PromotionParams).retrain.comparison.primary_metric == "roc_auc"
    with pytest.raises(ConfigError) as whole:
        parse_params(raw, Params)
    assert "serve.threshold" in str(whole.value)
    assert "monitor.no_such_key: unknown key" in str(whole.value)
    assert "retrain.window.live_rows" in str(whole.value)


def test_a_view_still_checks_its_own_sections() -> None:
    raw = real_params()
    raw["retrain"]["comparison"]["confidence"] = 2.0
    with pytest.raises(ConfigError, match=r"retrain\.comparison\.confidence"):
        parse_params(raw, PromotionParams)
    raw = real_params()
    raw["serve"]["threshold"] = 7
    with pytest.raises(ConfigError, match=r"serve\.threshold"):
        parse_params(raw, ServingParams)
