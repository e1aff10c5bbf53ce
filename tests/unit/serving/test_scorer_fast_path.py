"""POST /predict skips Starlette's middleware chain, and only it: other methods and routes
reach the app, the handler sees a normal Request, a crash in it is a 500 with a JSON body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from support.asgi import call

from plumbline.serving.server import PredictFastPath


def _app() -> FastAPI:
    app = FastAPI()
    app.response_queue_id = 7  # type: ignore[attr-defined]

    @app.get("/predict")
    def via_router_get() -> dict[str, str]:
        return {"via": "router"}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"via": "router"}

    return app


def test_post_predict_goes_straight_to_the_handler_with_the_app_on_the_request() -> None:
    seen: list[Any] = []

    async def handler(request: Request) -> Response:
        seen.append((request.app.response_queue_id, await request.body(), request.headers["x-a"]))
        return JSONResponse({"via": "fast path"}, headers={"x-request-id": "r1"})

    fast = PredictFastPath(_app(), handler, metrics=False)
    answer = call(fast, "POST", "/predict", body={"age": 41}, headers={"X-A": "b"})
    assert answer.status == 200
    assert answer.json() == {"via": "fast path"}
    assert answer.headers["x-request-id"] == "r1"
    assert seen == [(7, b'{"age": 41}', "b")]


def test_everything_else_goes_through_the_app() -> None:
    async def handler(request: Request) -> Response:
        raise AssertionError("not for this request")

    fast = PredictFastPath(_app(), handler, metrics=False)
    assert call(fast, "GET", "/predict").json() == {"via": "router"}
    assert call(fast, "GET", "/ready").json() == {"via": "router"}
    assert call(fast, "POST", "/ready").status == 405
    assert call(fast, "POST", "/nowhere").status == 404


def test_a_crash_in_the_handler_is_a_json_500() -> None:
    async def handler(request: Request) -> Response:
        raise RuntimeError("boom")

    answer = call(PredictFastPath(_app(), handler, metrics=False), "POST", "/predict", body={})
    assert answer.status == 500
    assert answer.json() == {"detail": "internal server error"}
