"""The promotion tests' projects: one featurized project per module, copied fresh for each test
with a registered-model name of its own, against one MLflow store per module."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from support.mlflowstore import new_store
from support.params import set_params
from support.promotion import prepare_data, use_project, write_base_project


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    new_store(path)
    return path


@pytest.fixture(scope="module")
def base_project(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Path:
    root = write_base_project(tmp_path_factory.mktemp("base") / "project")
    with pytest.MonkeyPatch.context() as mp:
        use_project(mp, root, store)
        prepare_data()
    return root


@pytest.fixture
def project(
    base_project: Path,
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Path:
    """A fresh copy of the featurized project with a registered-model name of its own, acting
    as nobody in particular (no token, the project's own audit trail)."""
    root = tmp_path / "project"
    shutil.copytree(base_project, root)
    use_project(monkeypatch, root, store)
    monkeypatch.delenv("PLUMBLINE_TOKEN", raising=False)
    monkeypatch.delenv("PLUMBLINE_AUDIT_URL", raising=False)
    set_params(root, **{"mlflow.model_name": re.sub(r"\W", "-", request.node.name)})
    return root
