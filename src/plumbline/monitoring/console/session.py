"""Who is using the console, and proof that a form was sent by the console's own page.

A person signs in with a personal token (``plumbline users add``); the token then rides in an
HttpOnly, SameSite=Strict cookie scoped to ``/console``, and every request authenticates it
again, so a revoked or expired token ends the session at once. Behind an authenticating proxy
the proxy's identity headers are used as on every other route.

Every POST carries a CSRF token: an HMAC of the session's identity under a secret of this
process (``PLUMBLINE_CONSOLE_SECRET`` for several replicas), so another site can neither read
nor forge it. The sign-in form's token is bound to a random nonce cookie the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from plumbline.governance.identity import Actor, Authenticator, Forbidden, Unauthenticated

SESSION_COOKIE = "plumbline_session"
NONCE_COOKIE = "plumbline_signin"
CSRF_FIELD = "csrf_token"
SECRET_ENV = "PLUMBLINE_CONSOLE_SECRET"
PATH = "/console"


@dataclass(frozen=True)
class Visitor:
    """The person behind a request: who (None before sign-in), how to act as them towards
    the server, and the key their CSRF tokens are bound to."""

    actor: Actor | None
    key: str
    credentials: dict[str, str]
    problem: str | None = None  # why a credential was not believed


class Sessions:
    def __init__(self, auth: Authenticator, secret: bytes | None = None) -> None:
        self.auth = auth
        env = os.environ.get(SECRET_ENV)
        self.secret = secret or (env.encode() if env else secrets.token_bytes(32))

    def visitor(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str | None
    ) -> Visitor:
        """The request's person: the proxy's identity, a bearer header, or the session
        cookie's token, in that order."""
        lowered = {k.lower(): v for k, v in headers.items()}
        token = cookies.get(SESSION_COOKIE)
        if token and "authorization" not in lowered:
            lowered["authorization"] = f"Bearer {token}"
        try:
            actor = self.auth.authenticate(lowered, client)
        except (Unauthenticated, Forbidden) as err:
            return Visitor(None, "", {}, str(err))
        if actor is None:
            return Visitor(None, "", {})
        proxy = self.auth.auth.proxy
        if actor.via == "proxy":
            forwarded = {
                name: value
                for name in (proxy.user_header, proxy.groups_header)
                if (value := lowered.get(name.lower())) is not None
            }
            return Visitor(actor, f"proxy:{actor.name}", forwarded)
        bearer = lowered["authorization"]
        digest = hashlib.sha256(bearer.encode()).hexdigest()
        return Visitor(actor, f"token:{digest}", {"Authorization": bearer})

    def _mac(self, purpose: str, key: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{key}".encode(), hashlib.sha256).hexdigest()

    def csrf(self, visitor: Visitor) -> str:
        return self._mac("csrf", visitor.key)

    def csrf_ok(self, visitor: Visitor, sent: str | None) -> bool:
        return bool(visitor.key) and _same(self.csrf(visitor), sent)

    def signin_csrf(self, nonce: str) -> str:
        return self._mac("signin", nonce)

    def signin_ok(self, nonce: str | None, sent: str | None) -> bool:
        return bool(nonce) and _same(self.signin_csrf(nonce or ""), sent)

    def sign(self, text: str) -> str:
        """A short signature, so that a notice in a redirect's query cannot be made up."""
        return self._mac("notice", text)[:20]

    def signed(self, text: str, sig: str | None) -> bool:
        return _same(self.sign(text), sig)


def _same(expected: str, sent: str | None) -> bool:
    """Constant-time equality, for any text a client sends (non-ASCII included)."""
    return bool(sent) and hmac.compare_digest(expected.encode(), (sent or "").encode())
