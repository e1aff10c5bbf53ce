"""Bearer-token checks (RFC 6750) shared by the prediction server and the monitor."""

from __future__ import annotations

import hmac

REALM = "plumbline"


def refusal(authorization: str, token: str) -> tuple[str, str] | None:
    """None when ``authorization`` is ``Bearer <token>``, else the 401's detail and its
    ``WWW-Authenticate`` challenge (``invalid_token`` when a credential was sent)."""
    if hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return None
    challenge = f'Bearer realm="{REALM}"'
    if authorization:
        return "missing or wrong bearer token", challenge + ', error="invalid_token"'
    return "a bearer token is required", challenge
