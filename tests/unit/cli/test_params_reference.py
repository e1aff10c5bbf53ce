"""`plumbline params-reference`: docs/params.md is current, covers params.yaml, names only keys
the models accept, and every setting has a description; ``--check`` catches a stale page."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel
from support.paths import REPO

from plumbline.cli.main import main
from plumbline.cli.params_reference import all_rows, render
from plumbline.core import settings as core_settings
from plumbline.core import yamlfile
from plumbline.model import settings as model_settings
from plumbline.monitoring import settings as monitoring_settings
from plumbline.monitoring.settings import Params
from plumbline.pipeline import settings as pipeline_settings
from plumbline.promotion import settings as promotion_settings
from plumbline.serving import settings as serving_settings

PAGE = REPO / "docs/params.md"
SETTINGS_MODULES = [
    core_settings,
    model_settings,
    pipeline_settings,
    promotion_settings,
    serving_settings,
    monitoring_settings,
]
# A table row's key cell: `dotted.key`, and for a data source key the kind it belongs to.
ROW_KEY = re.compile(r"^\| `([^`]+)`(?: \((\w+)\))? \|", re.MULTILINE)


def page_keys(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in ROW_KEY.finditer(text)]


def leaf_keys(node: Any, prefix: str = "") -> set[str]:
    """The dotted keys of a YAML document's values (a list is one value)."""
    if not isinstance(node, dict) or not node:
        return {prefix}
    return {leaf for key, value in node.items() for leaf in leaf_keys(value, f"{prefix}.{key}")}


def accepts(model: type[BaseModel], parts: list[str], kind: str | None) -> bool:
    """Whether ``model`` takes the key ``parts`` (of the source ``kind`` in a tagged union)."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    field = fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    annotation = field.annotation
    members = (
        get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    ) or (annotation,)
    models = [m for m in members if inspect.isclass(m) and issubclass(m, BaseModel)]
    if isinstance(field.discriminator, str):
        tag = field.discriminator
        models = [m for m in models if get_args(m.model_fields[tag].annotation) == (kind,)]
    return len(models) == 1 and accepts(models[0], parts[1:], kind)


def settings_models() -> list[type[BaseModel]]:
    return [
        cls
        for module in SETTINGS_MODULES
        for cls in vars(module).values()
        if inspect.isclass(cls) and issubclass(cls, BaseModel) and cls.__module__ == module.__name__
    ]


def test_the_committed_page_is_current() -> None:
    assert PAGE.is_file(), "docs/params.md is missing: run `plumbline params-reference`"
    assert PAGE.read_text(encoding="utf-8") == render(), (
        "docs/params.md differs from what the settings models generate: "
        "run `plumbline params-reference` and commit the page"
    )


def test_every_shipped_key_is_on_the_page_and_every_page_key_is_accepted() -> None:
    keys = page_keys(render())
    raw = yamlfile.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    shipped = {key.removeprefix(".") for key in leaf_keys(raw)}
    # A free-form mapping (tune.space: estimator -> hyperparameter -> range) is one row whose
    # description says what its entries hold; the settings model validates them.
    free_form = [row.key for row in all_rows() if row.type.startswith("dict[")]
    missing = {
        key
        for key in shipped - {key for key, _ in keys}
        if not any(key.startswith(f"{prefix}.") for prefix in free_form)
    }
    assert not missing, f"params.yaml keys missing from the page: {sorted(missing)}"
    unknown = [
        f"{key} ({kind})" if kind else key
        for key, kind in keys
        if not accepts(Params, key.split("."), kind)
    ]
    assert unknown == []
    kinds = {kind for key, kind in keys if kind}
    assert kinds == {"csv", "sql", "http"}
    assert all(key.startswith("data.source.") for key, kind in keys if kind)
    assert len(keys) == len(set(keys)) == len(all_rows())


def test_every_setting_has_a_description() -> None:
    models = settings_models()
    assert {"ParamsView", "DataConfig", "RolloutDecideConfig", "Params"} <= {
        m.__name__ for m in models
    }
    undocumented = [
        f"{model.__module__}.{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undocumented == [], "give these fields a Field(description=...)"


def test_the_page_spells_keys_types_and_defaults_as_params_yaml() -> None:
    rows = {(row.key, row.kind): row for row in all_rows()}
    assert ("validate.max_bad_fraction", None) in rows
    assert not any(key.startswith("validate_") for key, _ in rows)
    margin = rows["serve.rollout.decide.margin", None]
    assert (margin.type, margin.default, margin.constraints) == ("float", "`0.01`", "≥ 0")
    mode = rows["serve.rollout.mode", None]
    assert (mode.type, mode.default) == ('"off" | "shadow" | "canary"', "`'off'`")
    assert rows["data.source.sep", "csv"].default == "`','`"
    assert rows["data.source.url", "sql"].default == "(required)"
    assert rows["data.resample_rows", None].type == "int | null"
    assert rows["serve.fallback_artifact", None].type == "path | null"
    assert rows["featurize.exclude_columns", None].type == "list[str]"
    assert rows["featurize.train_fraction", None].constraints == "0 < x < 1"
    assert rows["monitor.port", None].constraints == "1 ≤ x ≤ 65535"
    assert rows["serve.rollout.decide.alpha", None].constraints == "0 < x < 1"


def test_check_fails_on_a_stale_page_and_passes_on_a_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A project without params.yaml: the page documents the models, not the file.
    monkeypatch.setenv("PLUMBLINE_ROOT", str(tmp_path))
    page = tmp_path / "docs/params.md"
    assert main(["params-reference", "--check"]) == 1
    assert "docs/params.md does not exist" in capsys.readouterr().err
    assert not page.exists()  # --check writes nothing

    assert main(["params-reference"]) == 0
    assert page.read_text(encoding="utf-8") == render()
    assert main(["params-reference", "--check"]) == 0

    stale = page.read_text(encoding="utf-8") + "A line written by hand.\n"
    page.write_text(stale, encoding="utf-8")
    assert main(["params-reference", "--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/params.md is out of date" in err
    assert "run `plumbline params-reference`" in err
    assert page.read_text(encoding="utf-8") == stale

    other = tmp_path / "elsewhere/params.md"
    assert main(["params-reference", "--output", str(other)]) == 0
    assert other.read_text(encoding="utf-8") == render()
    assert main(["params-reference", "--output", str(other), "--check"]) == 0
