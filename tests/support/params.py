"""Editing a project's params.yaml the way a user would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from plumbline.core import yamlfile


def deep_update(target: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """Merge nested ``updates`` into ``target`` (in place) and return it."""
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
    return target


def set_params(project: Path, **values: Any) -> None:
    """Set dotted keys in the project's params.yaml: set_params(p, **{"train.seed": 1})."""
    path = project / "params.yaml"
    params = yamlfile.safe_load(path.read_text())
    for dotted, value in values.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
