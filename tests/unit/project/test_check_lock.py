""".ci/check_lock.py names what a clean clone failed to reproduce."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from support.paths import REPO

LOCK = """schema: '2.0'
stages:
  train:
    cmd: plumbline train
    deps:
    - path: data/features/train.parquet
      md5: aaa
    params:
      params.yaml:
        train.seed: 42
    outs:
    - path: models/model.json
      md5: {card}
    - path: models/model.skops
      md5: ccc
"""


def check_lock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_lock", REPO / ".ci/check_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_changed_output_is_named_with_both_hashes() -> None:
    lines = check_lock().differences(LOCK.format(card="bbb"), LOCK.format(card="ddd"))
    assert lines == ["  train: out models/model.json: committed bbb, produced ddd"]


def test_identical_locks_have_no_differences() -> None:
    assert check_lock().differences(LOCK.format(card="bbb"), LOCK.format(card="bbb")) == []
