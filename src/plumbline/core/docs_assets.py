"""The API docs page (Swagger UI) served with no internet access: its JavaScript, CSS and icon
come from the app itself, never from a CDN (FastAPI's default ``/docs`` loads them from
cdn.jsdelivr.net, and stays blank on a closed network).

The assets are the ones the ``fastapi-offline`` package ships (Swagger UI 5, MIT-licensed
package, Swagger UI under Apache-2.0). That package offers them only through its own
``FastAPIOffline`` constructor, while LitServe builds the server's app: so this module reads
its asset folder directly, the one place that does, for the pinned release
(:data:`TESTED_RELEASE`); ``tests/unit/core/test_docs_assets.py`` fails when an upgrade moves
or drops a file.
"""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from plumbline.core.errors import PlumblineError

TESTED_RELEASE = "1.7.7"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
ASSETS_URL = "/docs-assets"
DOCS_ROUTES = ("/docs", "/docs/oauth2-redirect", "/redoc")


def asset_dir() -> Path:
    """The folder of Swagger UI's files inside the installed ``fastapi_offline`` package."""
    folder = Path(str(resources.files("fastapi_offline") / "static"))
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        release = metadata.version("fastapi-offline")
        raise PlumblineError(
            f"fastapi-offline {release} has no {', '.join(missing)} in {folder}: this project "
            f"was tested with {TESTED_RELEASE} (pyproject.toml pins it)"
        )
    return folder


def serve_docs_offline(app: FastAPI) -> None:
    """Replace ``app``'s docs pages by a Swagger UI whose assets the app serves itself, under
    :data:`ASSETS_URL`. ReDoc (another CDN page) is dropped rather than copied."""
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in DOCS_ROUTES
    ]
    app.docs_url = app.redoc_url = None
    app.mount(ASSETS_URL, StaticFiles(directory=asset_dir()), name="docs-assets")
    redirect = "/docs/oauth2-redirect"

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect, oauth2_redirect, methods=["GET"], include_in_schema=False)
