"""Identities and roles: who a request or a command acts as, and whether that role may.

Three ways to be someone: a personal token (``plumbline users``; only its SHA-256 is stored),
an authenticating proxy's identity headers (believed only from ``auth.proxy.trusted_proxies``),
and the deprecated single tokens of ``serve.admin_token_env`` and ``monitor.token_env``. On the
command line without a token the actor is the local operating-system user, recorded as such.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast, get_args

import sqlalchemy as sa

from plumbline.core.errors import PlumblineError
from plumbline.governance.settings import AuthConfig, Role

ROLES: tuple[str, ...] = get_args(Role)
TOKEN_PREFIX = "plb"


def role_allows(has: Role, needs: Role) -> bool:
    """Whether the role ``has`` includes ``needs`` (each role includes the ones before it)."""
    return ROLES.index(has) >= ROLES.index(needs)


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise PlumblineError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return cast(Role, role)


@dataclass(frozen=True)
class Actor:
    """Who did something: a user name, its role, and how it was authenticated (``via``: token,
    proxy, local, legacy-token or system)."""

    name: str
    role: Role
    via: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role, "via": self.via}


class Unauthenticated(PlumblineError):
    """No identity, or one that cannot be believed: HTTP 401 with ``WWW-Authenticate``."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error  # RFC 6750 error code ("invalid_token") when a credential was sent

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header of the 401."""
        challenge = 'Bearer realm="plumbline"'
        return challenge + (f', error="{self.error}"' if self.error else "")


class Forbidden(PlumblineError):
    """A known identity without the role needed: HTTP 403."""

    def __init__(self, message: str, actor: Actor | None = None, needs: Role | None = None):
        super().__init__(message)
        self.actor = actor
        self.needs = needs


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    """UTC ISO-8601 with microseconds and Z: sorts as text in any database."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


metadata = sa.MetaData()
users_table = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
)
tokens_table = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user", sa.String(200), sa.ForeignKey("users.name"), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("expires_at", sa.String(32), nullable=True),
    sa.Column("revoked_at", sa.String(32), nullable=True),
)


class Users:
    """The people who may act, with their roles and personal tokens, in the governance
    database. A token reads ``plb_<id>_<secret>``: the id names it in lists and revocations,
    and only the SHA-256 of the whole token is stored."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def _new_token(
        self, conn: sa.Connection, name: str, expires_days: float | None
    ) -> tuple[str, str]:
        if expires_days is not None and expires_days <= 0:
            raise PlumblineError(f"--expires-days must be positive, got {expires_days}")
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        now = now_utc()
        expires = iso(now + timedelta(days=expires_days)) if expires_days is not None else None
        conn.execute(
            tokens_table.insert().values(
                id=token_id,
                user=name,
                sha256=token_sha256(token),
                created_at=iso(now),
                expires_at=expires,
                revoked_at=None,
            )
        )
        return token_id, token

    def _user(self, conn: sa.Connection, name: str) -> sa.Row[Any] | None:
        return conn.execute(users_table.select().where(users_table.c.name == name)).first()

    def add(self, name: str, role: Role, expires_days: float | None = None) -> tuple[str, str]:
        """A new user with a first token: (token id, the token). The token is shown only now."""
        role = check_role(role)
        if not name or name != name.strip() or ":" in name:
            # "local:..." names the shell user, and proxied names come from the proxy.
            raise PlumblineError(f"invalid user name {name!r}: no spaces around it, no ':'")
        with self.engine.begin() as conn:
            if self._user(conn, name) is not None:
                raise PlumblineError(f"user {name!r} exists: `plumbline users token {name}`")
            conn.execute(
                users_table.insert().values(
                    name=name, role=role, created_at=iso(now_utc()), disabled=False
                )
            )
            return self._new_token(conn, name, expires_days)

    def token(self, name: str, expires_days: float | None = None) -> tuple[str, str]:
        """Another token for an existing user: (token id, the token)."""
        with self.engine.begin() as conn:
            if self._user(conn, name) is None:
                raise PlumblineError(f"no user {name!r}")
            return self._new_token(conn, name, expires_days)

    def list(self) -> list[dict[str, Any]]:
        """Every user with its tokens' ids and dates; never a secret or a hash."""
        with self.engine.connect() as conn:
            users = conn.execute(users_table.select().order_by(users_table.c.name)).all()
            tokens = conn.execute(
                tokens_table.select().order_by(tokens_table.c.created_at, tokens_table.c.id)
            ).all()
        out: list[dict[str, Any]] = []
        for user in users:
            out.append(
                {
                    "name": user.name,
                    "role": user.role,
                    "created_at": user.created_at,
                    "disabled": bool(user.disabled),
                    "tokens": [
                        {
                            "id": t.id,
                            "created_at": t.created_at,
                            "expires_at": t.expires_at,
                            "revoked_at": t.revoked_at,
                        }
                        for t in tokens
                        if t.user == user.name
                    ],
                }
            )
        return out

    def owner(self, token_id: str) -> str | None:
        """The user a token id belongs to."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(tokens_table.c.user).where(tokens_table.c.id == token_id)
            ).first()
        return None if row is None else str(row.user)

    def role(self, name: str) -> Role | None:
        with self.engine.connect() as conn:
            row = self._user(conn, name)
        return None if row is None else check_role(row.role)

    def revoke(self, token_id: str) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(tokens_table.select().where(tokens_table.c.id == token_id)).first()
            if row is None:
                raise PlumblineError(f"no token {token_id!r}: `plumbline users list` shows them")
            if row.revoked_at is None:
                conn.execute(
                    tokens_table.update()
                    .where(tokens_table.c.id == token_id)
                    .values(revoked_at=iso(now_utc()))
                )

    def set_role(self, name: str, role: Role) -> None:
        role = check_role(role)
        with self.engine.begin() as conn:
            if self._user(conn, name) is None:
                raise PlumblineError(f"no user {name!r}")
            conn.execute(users_table.update().where(users_table.c.name == name).values(role=role))

    def actor_for_token(self, token: str, now: datetime | None = None) -> Actor | None:
        """The token's user; None when the token is unknown, revoked or expired (or its user
        is disabled)."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(tokens_table, users_table.c.role, users_table.c.disabled)
                .join(users_table, users_table.c.name == tokens_table.c.user)
                .where(tokens_table.c.id == parts[1])
            ).first()
        # Found by its public id, then compared in constant time: the secret's hash never
        # decides a lookup's timing.
        if row is None or not hmac.compare_digest(row.sha256, token_sha256(token)):
            return None
        if row.revoked_at is not None or row.disabled:
            return None
        if row.expires_at is not None and row.expires_at <= iso(now or now_utc()):
            return None
        return Actor(row.user, check_role(row.role), "token")

    def empty(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users_table.c.name).limit(1)).first() is None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case (Starlette's headers are case-insensitive, a dict
    is not)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


def _trusted(host: str | None, proxies: list[str]) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for proxy in proxies:
        try:
            if address in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue  # a malformed entry trusts nobody
    return False


class Authenticator:
    """Who a request is: the proxy's headers, a personal token, or a deprecated single token.

    ``legacy`` maps each deprecated token (plaintext, from the environment) to the name and
    role it acts as; it is used only while ``auth.legacy_tokens`` is on."""

    def __init__(
        self,
        users: Users,
        auth: AuthConfig,
        legacy: Mapping[str, tuple[str, Role]] | None = None,
    ) -> None:
        self.users = users
        self.auth = auth
        self.legacy = {k: v for k, v in (legacy or {}).items() if k} if auth.legacy_tokens else {}

    def _proxied(self, headers: Mapping[str, str], client_host: str | None) -> Actor | None:
        proxy = self.auth.proxy
        if not proxy.enabled:
            return None
        user = _header(headers, proxy.user_header)
        if user is None:
            return None
        if not _trusted(client_host, proxy.trusted_proxies):
            raise Unauthenticated("identity header from an untrusted address")
        user = user.strip()
        if not user:
            raise Unauthenticated(f"empty {proxy.user_header} header")
        groups = [g.strip() for g in (_header(headers, proxy.groups_header) or "").split(",")]
        keys = [user, *(f"group:{g}" for g in groups if g)]
        roles = [proxy.roles[k] for k in keys if k in proxy.roles]
        if not roles:
            raise Forbidden(f"{user} (via proxy) has no role: map it in auth.proxy.roles")
        return Actor(user, max(roles, key=ROLES.index), "proxy")

    def _bearer(self, headers: Mapping[str, str]) -> Actor | None:
        authorization = (_header(headers, "Authorization") or "").strip()
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("expected 'Authorization: Bearer <token>'", "invalid_request")
        actor = self.users.actor_for_token(token)
        if actor is not None:
            return actor
        found: Actor | None = None
        for secret, (name, role) in self.legacy.items():
            # Compare with every one, in constant time each: no early exit to time.
            if hmac.compare_digest(secret.encode(), token.encode()):
                found = Actor(name, role, "legacy-token")
        if found is None:
            raise Unauthenticated(
                "the bearer token is unknown, expired or revoked", "invalid_token"
            )
        return found

    def authenticate(self, headers: Mapping[str, str], client_host: str | None) -> Actor | None:
        """The request's actor; None without any credential. Raises Unauthenticated for a
        credential that cannot be believed, Forbidden for a proxied user without a role."""
        return self._proxied(headers, client_host) or self._bearer(headers)

    def require(self, headers: Mapping[str, str], client_host: str | None, needs: Role) -> Actor:
        """The request's actor if its role includes ``needs``; else Unauthenticated (no
        credential) or Forbidden (too low a role)."""
        actor = self.authenticate(headers, client_host)
        if actor is None:
            raise Unauthenticated(f"credentials required (role {needs})")
        if not role_allows(actor.role, needs):
            raise Forbidden(
                f"role {needs} needed; {actor.name} (via {actor.via}) is {actor.role}",
                actor,
                needs,
            )
        return actor


def local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def cli_actor(users: Users, env: Mapping[str, str]) -> Actor:
    """Who runs a command: PLUMBLINE_TOKEN's user (Unauthenticated if the token is invalid,
    expired or revoked), else the local operating-system user as an admin: shell access to the
    project is full control, but it is recorded as such (``via`` local)."""
    token = env.get("PLUMBLINE_TOKEN")
    if token:
        actor = users.actor_for_token(token.strip())
        if actor is None:
            raise Unauthenticated("PLUMBLINE_TOKEN is unknown, expired or revoked", "invalid_token")
        return actor
    return Actor(f"local:{local_user()}", "admin", "local")
