"""Bearer-token checks (RFC 6750) shared by the prediction server and the monitor: the fixed
token of ``/predict`` and the ``WWW-Authenticate`` challenge of every 401."""

from __future__ import annotations

import hmac

REALM = "plumbline"


def challenge(invalid: bool = False) -> str:
    """The ``WWW-Authenticate`` value of a 401: ``invalid_token`` when a credential was sent
    and refused, the bare challenge when none was sent."""
    base = f'Bearer realm="{REALM}"'
    return base + ', error="invalid_token"' if invalid else base


def refusal(authorization: str, token: str) -> tuple[str, str] | None:
    """None when ``authorization`` is ``Bearer <token>``, else the 401's detail and its
    ``WWW-Authenticate`` challenge (``invalid_token`` when a credential was sent)."""
    if hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return None
    if authorization:
        return "missing or wrong bearer token", challenge(invalid=True)
    return "a bearer token is required", challenge()
