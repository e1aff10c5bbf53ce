"""The offline docs page: Swagger UI's files are where the pinned fastapi-offline release keeps
them (this fails loudly when an upgrade moves them), the page names no address off the app,
the assets are served, and ReDoc (a CDN page) is gone."""

from __future__ import annotations

import re
from importlib import metadata

from fastapi import FastAPI
from support.asgi import call

from plumbline.core.docs_assets import (
    ASSETS,
    ASSETS_URL,
    TESTED_RELEASE,
    asset_dir,
    serve_docs_offline,
)


def test_the_pinned_release_ships_swagger_ui_5() -> None:
    assert metadata.version("fastapi-offline") == TESTED_RELEASE
    folder = asset_dir()
    assert {name for name in ASSETS if (folder / name).stat().st_size > 1000} == set(ASSETS)
    # Swagger UI 5 renders OpenAPI 3.1, which FastAPI writes; 4.x cannot.
    bundle = (folder / "swagger-ui-bundle.js").read_text(errors="replace")
    assert re.search(r'version:"5\.\d+\.\d+"|swagger-ui@5|"5\.\d+\.\d+"', bundle)


def test_the_docs_page_loads_only_the_app_s_own_assets() -> None:
    app = FastAPI(title="An API")

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ping": "pong"}

    serve_docs_offline(app)
    page = call(app, "GET", "/docs")
    assert page.status == 200
    text = page.body.decode()
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", text)
    assert urls and all(u.startswith(("/", "data:")) for u in urls), urls
    assert not re.search(r"https?://", text)
    for name in ASSETS:
        asset = call(app, "GET", f"{ASSETS_URL}/{name}")
        assert asset.status == 200 and len(asset.body) > 1000, name
    assert call(app, "GET", "/redoc").status == 404
    assert len([r for r in app.router.routes if getattr(r, "path", "") == "/docs"]) == 1
    assert "/docs" not in call(app, "GET", "/openapi.json").json()["paths"]
