"""The monitor's bearer token on its POST routes, and its OpenAPI saying so (in-process)."""

from __future__ import annotations

from typing import Any

from support.asgi import call

from plumbline.monitoring.service import create_app


class _Retrainer:
    """What the refused requests never reach; the open ones answer from it."""

    def abort(self) -> None: ...

    def wait(self, timeout: float) -> None: ...


def _app(token: str | None) -> Any:
    return create_app(None, _Retrainer(), token, refresh_loop=False)  # type: ignore[arg-type]


def test_feedback_without_or_with_a_wrong_token_is_401_with_a_challenge() -> None:
    app = _app("s3cret")
    missing = call(app, "POST", "/feedback", {"request_id": "r", "outcome": 1})
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="plumbline"'
    assert missing.json()["detail"] == "a bearer token is required"
    wrong = call(
        app, "POST", "/feedback", {"request_id": "r"}, headers={"Authorization": "Bearer no"}
    )
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    for route in ("/alerts", "/retrain", "/refresh", "/report"):
        assert call(app, "POST", route, {}).status == 401, route
    assert call(app, "GET", "/health").status == 200  # probes stay open


def test_openapi_documents_the_token_only_when_it_is_on() -> None:
    doc = _app("s3cret").openapi()
    scheme = doc["components"]["securitySchemes"]["monitorToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for route in ("/feedback", "/alerts", "/retrain", "/refresh", "/report"):
        post = doc["paths"][route]["post"]
        assert post["security"] == [{"monitorToken": []}], route
        assert "401" in post["responses"], route
    assert "security" not in doc["paths"]["/health"]["get"]

    open_doc = _app(None).openapi()
    assert "securitySchemes" not in open_doc.get("components", {})
    assert "security" not in open_doc["paths"]["/feedback"]["post"]
