"""Identities: personal tokens (only hashes stored; expiry and revocation), the proxy's headers
(believed from a trusted address only, roles from users and groups), role ordering, the
deprecated single tokens, and who runs a command."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from plumbline.core.errors import PlumblineError
from plumbline.governance.identity import (
    ROLES,
    Actor,
    Authenticator,
    Forbidden,
    Unauthenticated,
    Users,
    cli_actor,
    role_allows,
)
from plumbline.governance.settings import AuthConfig, ProxyAuthConfig


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gov.sqlite"


@pytest.fixture
def users(db: Path) -> Users:
    return Users(sa.create_engine(f"sqlite:///{db}"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_roles_are_ordered_each_including_the_ones_before() -> None:
    assert ROLES == ("viewer", "operator", "approver", "admin")
    assert role_allows("admin", "viewer") and role_allows("approver", "operator")
    assert role_allows("operator", "operator")
    assert not role_allows("operator", "approver") and not role_allows("viewer", "operator")
    assert Actor("a", "viewer", "token").to_json() == {
        "name": "a",
        "role": "viewer",
        "via": "token",
    }


def test_a_token_names_its_user_until_revoked(users: Users) -> None:
    assert users.empty()
    token_id, token = users.add("alice", "approver")
    assert not users.empty()
    assert token.startswith(f"plb_{token_id}_")
    assert users.actor_for_token(token) == Actor("alice", "approver", "token")
    assert users.actor_for_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert users.actor_for_token("plb_nosuchid_secret") is None
    assert users.actor_for_token("not a token") is None

    second_id, second = users.token("alice")
    users.revoke(token_id)
    assert users.actor_for_token(token) is None
    assert users.actor_for_token(second) == Actor("alice", "approver", "token")
    users.revoke(token_id)  # again: no change
    with pytest.raises(PlumblineError, match="no token"):
        users.revoke("nosuchid")

    users.set_role("alice", "admin")
    assert users.actor_for_token(second) == Actor("alice", "admin", "token")
    listed = users.list()
    assert [u["name"] for u in listed] == ["alice"]
    assert listed[0]["role"] == "admin"
    tokens = {t["id"]: t for t in listed[0]["tokens"]}
    assert set(tokens) == {token_id, second_id}
    assert tokens[token_id]["revoked_at"] and tokens[second_id]["revoked_at"] is None
    assert token not in repr(listed) and second not in repr(listed)


def test_a_token_expires(users: Users) -> None:
    _, token = users.add("bob", "viewer", expires_days=1)
    assert users.actor_for_token(token) is not None
    later = datetime.now(UTC) + timedelta(days=1, seconds=1)
    assert users.actor_for_token(token, now=later) is None
    assert users.actor_for_token(token, now=later - timedelta(seconds=10)) is not None


def test_users_refuse_duplicates_unknown_names_and_roles(users: Users) -> None:
    users.add("alice", "admin")
    with pytest.raises(PlumblineError, match="exists"):
        users.add("alice", "viewer")
    with pytest.raises(PlumblineError, match="unknown role"):
        users.add("carol", "root")  # type: ignore[arg-type]
    with pytest.raises(PlumblineError, match="invalid user name"):
        users.add("local:root", "admin")
    with pytest.raises(PlumblineError, match="no user"):
        users.token("nobody")
    with pytest.raises(PlumblineError, match="no user"):
        users.set_role("nobody", "viewer")


def test_only_hashes_are_stored(db: Path, users: Users) -> None:
    tokens = [users.add("alice", "admin")[1], users.token("alice")[1]]
    users.add("bob", "viewer")
    raw = db.read_bytes()
    for token in tokens:
        secret = token.split("_", 2)[2]
        assert secret.encode() not in raw
        assert token.encode() not in raw
        assert hashlib.sha256(token.encode()).hexdigest().encode() in raw


PROXY = AuthConfig(
    proxy=ProxyAuthConfig(
        enabled=True,
        trusted_proxies=["10.0.0.5", "192.168.7.0/24"],
        roles={"alice": "viewer", "group:risk-team": "approver", "group:ops": "operator"},
    )
)


def test_proxy_headers_are_believed_from_a_trusted_address_only(users: Users) -> None:
    auth = Authenticator(users, PROXY)
    headers = {"X-Forwarded-User": "alice", "X-Forwarded-Groups": "ops, risk-team"}
    # The highest role of the user's own mapping and its groups wins.
    assert auth.authenticate(headers, "10.0.0.5") == Actor("alice", "approver", "proxy")
    assert auth.authenticate(headers, "192.168.7.20") == Actor("alice", "approver", "proxy")
    for host in ("10.0.0.6", "192.168.8.1", None, "not-an-ip"):
        with pytest.raises(Unauthenticated, match="untrusted address"):
            auth.authenticate(headers, host)
    # Header names are case-insensitive, as HTTP's are.
    lower = {"x-forwarded-user": "alice"}
    assert auth.authenticate(lower, "10.0.0.5") == Actor("alice", "viewer", "proxy")
    with pytest.raises(Forbidden, match="no role"):
        auth.authenticate({"X-Forwarded-User": "mallory"}, "10.0.0.5")
    assert auth.authenticate({}, "10.0.0.5") is None


def test_proxy_headers_are_ignored_while_the_proxy_is_off(users: Users) -> None:
    auth = Authenticator(users, AuthConfig())
    assert auth.authenticate({"X-Forwarded-User": "alice"}, "10.0.0.5") is None


def test_bearer_tokens_and_require(users: Users) -> None:
    _, token = users.add("olga", "operator")
    auth = Authenticator(users, AuthConfig())
    assert auth.require(bearer(token), "1.2.3.4", "operator") == Actor("olga", "operator", "token")
    assert auth.require(bearer(token), None, "viewer").name == "olga"
    with pytest.raises(Forbidden, match="role approver needed; olga") as refused:
        auth.require(bearer(token), None, "approver")
    assert refused.value.actor == Actor("olga", "operator", "token")
    assert refused.value.needs == "approver"
    with pytest.raises(Unauthenticated, match="credentials required") as missing:
        auth.require({}, None, "viewer")
    assert missing.value.challenge == 'Bearer realm="plumbline"'
    with pytest.raises(Unauthenticated, match="unknown, expired or revoked") as wrong:
        auth.require(bearer("plb_x_y"), None, "viewer")
    assert wrong.value.challenge == 'Bearer realm="plumbline", error="invalid_token"'
    with pytest.raises(Unauthenticated, match="Bearer"):
        auth.require({"Authorization": "Basic dXNlcjpwYXNz"}, None, "viewer")


def test_legacy_tokens_act_as_operators_while_allowed(users: Users) -> None:
    legacy = {"s3cret": ("legacy-admin-token", "operator"), "": ("unset", "admin")}
    auth = Authenticator(users, AuthConfig(), legacy)
    assert auth.authenticate(bearer("s3cret"), None) == Actor(
        "legacy-admin-token", "operator", "legacy-token"
    )
    with pytest.raises(Unauthenticated):
        auth.authenticate(bearer(""), None)  # an unset variable is no token
    off = Authenticator(users, AuthConfig(legacy_tokens=False), legacy)
    with pytest.raises(Unauthenticated):
        off.authenticate(bearer("s3cret"), None)


def test_cli_actor_is_the_token_s_user_or_the_local_user(users: Users) -> None:
    local = cli_actor(users, {})
    assert local.name.startswith("local:") and (local.role, local.via) == ("admin", "local")
    token_id, token = users.add("alice", "approver")
    assert cli_actor(users, {"PLUMBLINE_TOKEN": token}) == Actor("alice", "approver", "token")
    users.revoke(token_id)
    with pytest.raises(Unauthenticated, match="PLUMBLINE_TOKEN"):
        cli_actor(users, {"PLUMBLINE_TOKEN": token})
