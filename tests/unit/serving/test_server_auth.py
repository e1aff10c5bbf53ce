"""The bearer-token logic of /predict and the new serve settings, without a server (the real
server's answers: tests/integration/serving/test_openapi_fuzz.py)."""

from __future__ import annotations

import pydantic
import pytest
from starlette.requests import Request

from plumbline.core.settings import ConfigError
from plumbline.serving.server import _check_bearer, _predict_token
from plumbline.serving.settings import ServeConfig


def _request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "POST", "path": "/predict", "headers": headers})


def test_token_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUMBLINE_PREDICT_TOKEN", "secret")
    assert ServeConfig().predict_auth is False
    assert _predict_token(ServeConfig()) is None


def test_auth_on_needs_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_TOKEN", raising=False)
    cfg = ServeConfig(predict_auth=True, predict_token_env="MY_TOKEN")
    with pytest.raises(ConfigError, match="MY_TOKEN is not set"):
        _predict_token(cfg)
    monkeypatch.setenv("MY_TOKEN", "")
    with pytest.raises(ConfigError):
        _predict_token(cfg)
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    assert _predict_token(cfg) == "s3cret"


def test_missing_wrong_and_right_tokens() -> None:
    missing = _check_bearer(_request(None), "s3cret")
    assert missing is not None and missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="plumbline"'
    for wrong in ("Bearer nope", "s3cret", "Basic s3cret", "Bearer s3cret "):
        refused = _check_bearer(_request(wrong), "s3cret")
        assert refused is not None and refused.status_code == 401, wrong
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert _check_bearer(_request("Bearer s3cret"), "s3cret") is None


def test_restart_backoff_is_validated() -> None:
    with pytest.raises(pydantic.ValidationError, match="restart_backoff_max_s"):
        ServeConfig(restart_backoff_s=10, restart_backoff_max_s=1)
    with pytest.raises(pydantic.ValidationError):
        ServeConfig(restart_backoff_s=0)
