"""The interactive API docs (`/docs`, Swagger UI) served from a local package, not a CDN.

FastAPI's default page loads Swagger UI from jsdelivr, which leaves `/docs` blank on a machine
without internet (a camera network, an air-gapped cluster). The assets come from the
`swagger-ui-bundle` package instead (Apache-2.0, like Swagger UI itself).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs-assets"


def mount_api_docs(app: FastAPI) -> None:
    """Serve `/docs` with local Swagger UI assets under `/docs-assets/` (create the app with
    `docs_url=None` so FastAPI's CDN page is not registered)."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
