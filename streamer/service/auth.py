"""Optional bearer-token auth for every HTTP and websocket endpoint except the health check.

The browser client's own files (GET/HEAD of `/` and the files in the static folder) stay public:
the page must load before it can ask the user for the token, and it holds no data.

The token is read from `Authorization: Bearer <token>` or a `?token=<token>` query parameter
(browsers cannot set headers on websockets). A bad or missing token gets HTTP 401, or for a
websocket an accepted-then-closed connection with close code 4401.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

WS_CLOSE_UNAUTHORIZED = 4401
OPEN_PATHS = frozenset({"/healthz"})


class EmptyTokenError(ValueError):
    """An empty token was configured (refused at start-up)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()


def _token_from(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    return tokens[0] if tokens else None


class BearerAuthMiddleware:
    """Pure ASGI middleware (it sees websockets too, unlike `BaseHTTPMiddleware`)."""

    def __init__(self, app: ASGIApp, *, token: str, static_dir: Path | None = None) -> None:
        if not token.strip():
            raise EmptyTokenError("the auth token is empty: it would accept a bare 'Bearer'")
        self.app = app
        self._digest = _digest(token)
        self._public_files = _static_paths(static_dir)

    def _is_public(self, scope: Scope) -> bool:
        if scope["path"] in OPEN_PATHS:
            return True
        return (
            scope["type"] == "http"
            and scope.get("method") in ("GET", "HEAD")
            and scope["path"] in self._public_files
        )

    def _authorized(self, scope: Scope) -> bool:
        given = _token_from(scope)
        # Digests first: the comparison is constant time and independent of the lengths.
        return given is not None and hmac.compare_digest(_digest(given), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._is_public(scope):
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            refusal = JSONResponse(
                {"code": "unauthorized", "message": "missing or bad token"},
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
            await refusal(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        # Accept first so the client sees a close code (a refused handshake is only "403").
        await send({"type": "websocket.accept"})
        await send(
            {
                "type": "websocket.close",
                "code": WS_CLOSE_UNAUTHORIZED,
                "reason": "missing or bad token",
            }
        )


def _static_paths(static_dir: Path | None) -> frozenset[str]:
    """URL paths of the client's files: "/", "/index.html", "/app.js", ..."""
    if static_dir is None or not Path(static_dir).is_dir():
        return frozenset()
    root = Path(static_dir)
    files = {"/" + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return frozenset(files | {"/"})
