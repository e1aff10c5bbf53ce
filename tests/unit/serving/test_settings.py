"""serve.rollout in params.yaml: defaults, YAML's bare `off`, and wrong keys named."""

from __future__ import annotations

import pytest
from support.paths import REPO

from plumbline.core import yamlfile
from plumbline.core.settings import ConfigError, parse_params
from plumbline.monitoring.settings import load_params
from plumbline.serving.settings import ServingParams


def _raw(rollout: str) -> dict:
    raw = yamlfile.safe_load((REPO / "params.yaml").read_text())
    raw["serve"]["rollout"] = yamlfile.safe_load(rollout)
    return raw


def test_the_repository_params_roll_nothing_out() -> None:
    rollout = load_params(REPO / "params.yaml").serve.rollout
    assert rollout.mode == "off" and rollout.challenger_alias == "challenger"
    assert rollout.decide.auto is False and rollout.decide.metric == "roc_auc"


def test_a_bare_off_means_off_and_the_modes_parse() -> None:
    assert (
        parse_params(_raw("{mode: off}"), ServingParams).serve.rollout.mode == "off"
    )  # YAML: false
    cfg = parse_params(
        _raw("{mode: canary, canary_fraction: 0.2, sticky_key: X-User}"), ServingParams
    )
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
        parse_params(_raw(section), ServingParams)


def test_a_window_smaller_than_the_rows_a_verdict_needs_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"window_rows \(400\) < min_labelled_rows \(500\)"):
        parse_params(_raw("{decide: {window_rows: 400, min_labelled_rows: 500}}"), ServingParams)
    decide = parse_params(
        _raw("{decide: {min_labelled_rows: 300, max_looks: 3}}"), ServingParams
    ).serve.rollout
    assert decide.decide.look_rows() == [300, 600, 1200]
    assert decide.decide.confidence == pytest.approx(1 - 0.05 / 3)
    assert decide.decide.margin > 0  # an equal challenger cannot clear the default


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"mode": "canary", "canary_fraction": true}', "valid number"),
        ('{"mode": "canary", "canary_fraction": "0.5"}', "valid number"),
        ('{"mode": "canary", "canary_fraction": 1.5}', "less than or equal to 1"),
        ('{"mode": "shadow", "canary_fraction": 0.5}', "canary_fraction is for mode canary"),
        ('{"mode": "off", "canary_fraction": 0.0}', "canary_fraction is for mode canary"),
    ],
)
def test_admin_rollout_refuses_a_fraction_that_is_not_a_canary_share(
    body: str, message: str
) -> None:
    import orjson

    from plumbline.serving.rollout.admin import RolloutRequest, parse

    answer = parse(body.encode())
    assert not isinstance(answer, RolloutRequest) and answer.status_code == 422
    detail = orjson.loads(bytes(answer.body))["detail"]
    assert detail[0]["loc"] == ["canary_fraction"] and message in detail[0]["msg"]


def test_admin_rollout_takes_a_number_for_a_canary() -> None:
    from plumbline.serving.rollout.admin import RolloutRequest, parse

    for raw, expected in (("1", 1.0), ("0.25", 0.25)):
        body = parse(f'{{"mode": "canary", "canary_fraction": {raw}}}'.encode())
        assert isinstance(body, RolloutRequest) and body.canary_fraction == expected
    body = parse(b'{"mode": "shadow"}')
    assert isinstance(body, RolloutRequest) and body.canary_fraction is None


def test_status_says_when_a_canary_can_never_reach_a_verdict() -> None:
    from plumbline.cli.rollout import _arm_lines, unreachable

    decide = load_params(REPO / "params.yaml").serve.rollout.decide  # 5000 rows, 500 needed
    assert unreachable(decide, "shadow", 0.0) is None
    assert unreachable(decide, "canary", 0.1) is None  # 500 of 5000: just enough
    never = unreachable(decide, "canary", 0.05)
    assert never is not None and "challenger is expected to hold 250 of the 5000" in never
    never = unreachable(decide, "canary", 0.95)
    assert never is not None and "champion is expected to hold 250" in never
    lines = _arm_lines(
        {
            "mode": "shadow",
            "canary_fraction": 0.1,
            "arms": {"challenger": {"requests": 10, "scoring_calls": 2, "scoring_rows": 10}},
            "skipped": {"loading": 3, "over_budget": 7, "busy": 0},
            "shadow_paused": True,
        }
    )
    assert "challenger skipped (not errors): 3 loading, 7 over budget" in "\n".join(lines)
    assert any("shadow scoring paused" in line for line in lines)
