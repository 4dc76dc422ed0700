"""The interactive API docs (`/docs`, Swagger UI; `/redoc`, ReDoc) served from a local
package, not a CDN.

FastAPI's default pages load their scripts from jsdelivr, which leaves `/docs` blank on a
machine without internet (a camera network, an air-gapped cluster). `fastapi-offline` (MIT)
ships Swagger UI 5 (Apache-2.0), which reads the OpenAPI 3.1 documents FastAPI writes (the
Swagger UI 4 of `swagger-ui-bundle` said "Unable to render this definition"), and ReDoc 2.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

ASSETS = "/docs-assets"


def offline_docs_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app (kwargs as for `FastAPI`) whose `/docs` and `/redoc` use the local assets
    under `/docs-assets/`."""
    return FastAPIOffline(docs_url="/docs", redoc_url="/redoc", static_url=ASSETS, **kwargs)
