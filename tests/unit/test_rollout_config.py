"""serve.rollout in params.yaml: defaults, YAML's bare `off`, and wrong keys named."""

from __future__ import annotations

import pytest
import yaml
from support.paths import REPO

from plumbline.config import ConfigError, load_params, parse_params


def _raw(rollout: str) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["serve"]["rollout"] = yaml.safe_load(rollout)
    return raw


def test_the_repository_params_roll_nothing_out() -> None:
    rollout = load_params(REPO / "params.yaml").serve.rollout
    assert rollout.mode == "off" and rollout.challenger_alias == "challenger"
    assert rollout.decide.auto is False and rollout.decide.metric == "roc_auc"


def test_a_bare_off_means_off_and_the_modes_parse() -> None:
    assert parse_params(_raw("{mode: off}")).serve.rollout.mode == "off"  # YAML: false
    cfg = parse_params(_raw("{mode: canary, canary_fraction: 0.2, sticky_key: X-User}"))
    assert (cfg.serve.rollout.mode, cfg.serve.rollout.canary_fraction) == ("canary", 0.2)
    assert cfg.serve.rollout.sticky_key == "X-User"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{mode: blue-green}", "serve.rollout.mode"),
        ("{canary_fraction: 1.5}", "serve.rollout.canary_fraction"),
        ("{decide: {metric: accuracy}}", "serve.rollout.decide.metric"),
        ("{decide: {auto_promote: true}}", "serve.rollout.decide.auto_promote: unknown key"),
    ],
)
def test_wrong_rollout_settings_are_named(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_params(_raw(section))
