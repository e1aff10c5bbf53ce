""".ci/check_lock.py names what a clean clone failed to reproduce."""

from __future__ import annotations

from types import ModuleType

from support.paths import REPO, load_script

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
    return load_script(REPO / ".ci/check_lock.py")


def test_the_changed_output_is_named_with_both_hashes() -> None:
    lines = check_lock().differences(LOCK.format(card="bbb"), LOCK.format(card="ddd"))
    assert lines == ["  train: out models/model.json: committed bbb, produced ddd"]


def test_identical_locks_have_no_differences() -> None:
    assert check_lock().differences(LOCK.format(card="bbb"), LOCK.format(card="bbb")) == []
