"""The bearer-token logic of /predict, the serve settings, and the governance roles of the
admin routes (/admin/reload, /admin/rollout) answered in-process, without a server (the real
server's answers: tests/integration/serving/test_openapi_fuzz.py and test_reload.py)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydantic
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.requests import Request
from support.asgi import call

from plumbline.core.settings import ConfigError, MlflowConfig
from plumbline.governance.identity import ROLES, Users, role_allows
from plumbline.governance.settings import AuditConfig, AuthConfig, ProxyAuthConfig
from plumbline.serving.reload import RELOAD_REQUEST, worker_key
from plumbline.serving.rollout.admin import RolloutAdmin, document
from plumbline.serving.rollout.router import ROLLOUT_KEY, challenger_key, worker_rollout_key
from plumbline.serving.server import (
    AdminAccess,
    PlumblineServer,
    _check_bearer,
    _predict_token,
    admin_refusals,
)
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


# --- the admin routes: roles, refusals and the audit trail (in-process) ---------------------


class _Shared(dict[str, Any]):
    """The server's shared state, with workers that apply a rollout as soon as it is written."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key == ROLLOUT_KEY:
            super().__setitem__(worker_rollout_key(0), {"seq": value["seq"]})
            super().__setitem__(challenger_key(0), {"ready": True, "model": "4"})


def _settings(tmp_path: Path, auth: AuthConfig | None = None) -> Any:
    serve = ServeConfig(inference_workers=1)
    params = SimpleNamespace(
        audit=AuditConfig(url=f"sqlite:///{tmp_path / 'governance.sqlite'}"),
        auth=auth or AuthConfig(),
        serve=serve,
        mlflow=MlflowConfig(),
    )
    return SimpleNamespace(params=params, serve=serve, root=tmp_path)


def _admin_app(settings: Any) -> tuple[FastAPI, AdminAccess]:
    """The two admin routes as the server registers them, on a fake shared state whose one
    worker reports every reload and rollout as done."""
    access = AdminAccess(settings)
    shared = _Shared({worker_key(0): {"ready": True, "model": {"model_version": "3"}}})

    def states() -> list[dict[str, Any] | None]:
        state = dict(shared.get(worker_key(0)) or {})
        state["handled_reload"] = int(shared.get(RELOAD_REQUEST, 0))
        state["last_reload"] = {"status": "unchanged", "version": "3"}
        return [state]

    server = SimpleNamespace(access=access, shared=shared, settings=settings, _worker_states=states)

    async def reload(request: Request) -> Response:
        return await PlumblineServer._reload(server, request)  # type: ignore[arg-type]

    app = FastAPI()
    app.add_api_route("/admin/reload", reload, methods=["POST"])
    rollout = RolloutAdmin(settings, lambda: shared, access)
    app.add_api_route("/admin/rollout", rollout.handle, methods=["GET", "POST"])
    return app, access


@pytest.fixture(autouse=True)
def _no_audit_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLUMBLINE_AUDIT_URL", raising=False)
    monkeypatch.delenv("PLUMBLINE_ADMIN_TOKEN", raising=False)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN_ROUTES = [
    ("POST", "/admin/reload", None, "operator"),
    ("GET", "/admin/rollout", None, "viewer"),
    ("POST", "/admin/rollout", {"mode": "off"}, "operator"),
]


@pytest.mark.parametrize(("method", "route", "body", "needs"), ADMIN_ROUTES)
def test_admin_routes_need_a_credential_and_the_role(
    tmp_path: Path, method: str, route: str, body: Any, needs: str
) -> None:
    app, access = _admin_app(_settings(tmp_path))
    _, trail = access.governance()
    users = Users(trail.engine)
    tokens = {role: users.add(f"u-{role}", role)[1] for role in ROLES}  # type: ignore[arg-type]

    missing = call(app, method, route, body)
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="plumbline"'
    wrong = call(app, method, route, body, headers=_bearer("plb_nope_nope"))
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert trail.records(actions=["refused"]) == []  # no identity: nothing to record

    for role in ROLES:
        answer = call(app, method, route, body, headers=_bearer(tokens[role]))
        allowed = role_allows(role, needs)  # type: ignore[arg-type]
        assert answer.status == (200 if allowed else 403), (role, answer.body)
        if not allowed:
            assert needs in answer.json()["detail"]
    refused = trail.records(actions=["refused"])
    lower = [r for r in ROLES if not role_allows(r, needs)]  # type: ignore[arg-type]
    assert [r.actor for r in refused] == [f"u-{r}" for r in lower]
    for record in refused:
        assert record.subject == {"route": route, "method": method}
        assert record.evidence["needs"] == needs
    assert trail.verify().ok


def test_reload_and_a_rollout_switch_are_recorded_with_their_actor(tmp_path: Path) -> None:
    app, access = _admin_app(_settings(tmp_path))
    _, trail = access.governance()
    _, token = Users(trail.engine).add("olga", "operator")
    assert call(app, "POST", "/admin/reload", headers=_bearer(token)).status == 200
    switched = call(
        app,
        "POST",
        "/admin/rollout",
        {"mode": "canary", "canary_fraction": 0.2},
        headers=_bearer(token),
    )
    assert switched.status == 200, switched.body
    assert call(app, "GET", "/admin/rollout", headers=_bearer(token)).status == 200
    reload, mode = trail.records(actions=["reload", "rollout_mode"])
    assert (reload.action, reload.actor, reload.via) == ("reload", "olga", "token")
    assert reload.subject["version"] == "3" and reload.subject["alias"] == "champion"
    assert reload.evidence["status"] == "unchanged"
    assert (mode.action, mode.actor) == ("rollout_mode", "olga")
    assert (mode.subject["from"], mode.subject["to"]) == ("off", "canary")
    assert mode.subject["canary_fraction"] == 0.2
    # A read changes nothing and records nothing; a refused write changes nothing.
    assert len(trail.records()) == 2


def test_revoked_and_expired_tokens_are_refused(tmp_path: Path) -> None:
    app, access = _admin_app(_settings(tmp_path))
    _, trail = access.governance()
    users = Users(trail.engine)
    token_id, revoked = users.add("rita", "admin")
    assert call(app, "GET", "/admin/rollout", headers=_bearer(revoked)).status == 200
    users.revoke(token_id)
    _, expired = users.token("rita", expires_days=1e-9)  # expires within a millisecond
    time.sleep(0.01)
    for token in (revoked, expired):
        answer = call(app, "GET", "/admin/rollout", headers=_bearer(token))
        assert answer.status == 401
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_the_deprecated_admin_token_is_an_operator_while_legacy_tokens_are_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUMBLINE_ADMIN_TOKEN", "old-secret")
    app, access = _admin_app(_settings(tmp_path))
    assert call(app, "POST", "/admin/reload", headers=_bearer("old-secret")).status == 200
    (record,) = access.governance()[1].records(actions=["reload"])
    assert (record.actor, record.via) == ("legacy-admin-token", "legacy-token")

    off = _settings(tmp_path / "off", AuthConfig(legacy_tokens=False))
    (tmp_path / "off").mkdir()
    app, _ = _admin_app(off)
    assert call(app, "POST", "/admin/reload", headers=_bearer("old-secret")).status == 401


def test_proxy_identity_is_believed_only_from_a_trusted_address(tmp_path: Path) -> None:
    proxy = ProxyAuthConfig(
        enabled=True,
        trusted_proxies=["10.1.2.0/24"],
        roles={"alice": "viewer", "group:sre": "operator"},
    )
    app, access = _admin_app(_settings(tmp_path, AuthConfig(proxy=proxy)))
    alice = {"X-Forwarded-User": "alice"}
    sre = {"X-Forwarded-User": "bob", "X-Forwarded-Groups": "staff, sre"}
    assert call(app, "GET", "/admin/rollout", headers=alice, client="10.1.2.3").status == 200
    assert call(app, "POST", "/admin/reload", headers=sre, client="10.1.2.3").status == 200
    refused = call(app, "POST", "/admin/reload", headers=alice, client="10.1.2.3")
    assert refused.status == 403
    # The same headers from anywhere else are not believed.
    for headers in (alice, sre):
        spoofed = call(app, "POST", "/admin/reload", headers=headers, client="192.0.2.7")
        assert spoofed.status == 401
        assert spoofed.headers["www-authenticate"].startswith('Bearer realm="plumbline"')
    # A proxied user with no role mapping is refused, and that is recorded too.
    nobody = {"X-Forwarded-User": "mallory"}
    assert call(app, "GET", "/admin/rollout", headers=nobody, client="10.1.2.3").status == 403
    _, trail = access.governance()
    assert [(r.actor, r.via) for r in trail.records(actions=["refused"])] == [
        ("alice", "proxy"),
        ("mallory", "proxy"),
    ]
    (reload,) = trail.records(actions=["reload"])
    assert (reload.actor, reload.via) == ("bob", "proxy")


def test_predict_token_is_not_an_admin_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUMBLINE_PREDICT_TOKEN", "predict-secret")
    app, _ = _admin_app(_settings(tmp_path))
    answer = call(app, "POST", "/admin/reload", headers=_bearer("predict-secret"))
    assert answer.status == 401


def test_openapi_of_the_rollout_routes_names_the_roles_and_refusals() -> None:
    paths: dict[str, Any] = {"/admin/rollout": {"get": {}, "post": {}}}

    def described(text: str, *_: Any, **__: Any) -> dict[str, Any]:
        return {"description": text}

    document(paths, described, admin_refusals)
    for method, role in (("get", "viewer"), ("post", "operator")):
        op = paths["/admin/rollout"][method]
        assert role in op["summary"]
        assert set(op["responses"]) >= {"200", "401", "403"}
        assert role in op["responses"]["403"]["description"]
