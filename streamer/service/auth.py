"""Bearer-token authentication and per-session authorization for every HTTP and websocket
endpoint except the health check (the rules are in `streamer.access`).

The browser client's own files (GET/HEAD of `/` and the files in the static folder) stay public:
the page must load before it can ask the user for the token, and it holds no data.

A credential is read from `Authorization: Bearer <token>`, from a websocket subprotocol
`bearer.<token>` (browsers cannot set headers on websockets, but can offer subprotocols; the
server then selects `sam2-stream`), or, for old clients, a `?token=<token>` query parameter
(kept out of the logs by `streamer.service.redact`, but a URL travels further than a header).
An unknown credential gets HTTP 401 (websocket: accepted, then closed with 4401); a known one
without the right gets 403 (websocket: 4403).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from streamer.access import Access, Role, allowed, client_address, session_of
from streamer.sessions.errors import SessionNotFoundError

WS_CLOSE_UNAUTHORIZED = 4401
WS_CLOSE_FORBIDDEN = 4403
OPEN_PATHS = frozenset({"/healthz"})
SUBPROTOCOL = "sam2-stream"
_BEARER_PROTOCOL = "bearer."


class EmptyTokenError(ValueError):
    """An empty token was configured (refused at start-up)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()


def _subprotocols(scope: Scope) -> list[str]:
    for name, value in scope.get("headers", []):
        if name == b"sec-websocket-protocol":
            return [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return []


def chosen_subprotocol(scope: Scope) -> str | None:
    """The subprotocol a websocket accept must select (`sam2-stream` if the client offered it:
    a browser that offered subprotocols fails a handshake that selects none)."""
    return SUBPROTOCOL if SUBPROTOCOL in _subprotocols(scope) else None


def _token_from(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    if scope["type"] == "websocket":
        for protocol in _subprotocols(scope):
            if protocol.startswith(_BEARER_PROTOCOL):
                return protocol[len(_BEARER_PROTOCOL) :]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    return tokens[0] if tokens else None


class BearerAuthMiddleware:
    """Pure ASGI middleware (it sees websockets too, unlike `BaseHTTPMiddleware`).

    token: the service token (creates sessions); admin_token: the admin credential (None:
    nobody is admin). Session tokens are looked up on the app's session manager.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        admin_token: str | None = None,
        static_dir: Path | None = None,
    ) -> None:
        if not token.strip() or (admin_token is not None and not admin_token.strip()):
            raise EmptyTokenError("the auth token is empty: it would accept a bare 'Bearer'")
        self.app = app
        self._digest = _digest(token)
        self._admin_digest = _digest(admin_token) if admin_token else None
        self._public_files = _static_paths(static_dir)

    def _is_public(self, scope: Scope) -> bool:
        if scope["path"] in OPEN_PATHS:
            return True
        return (
            scope["type"] == "http"
            and scope.get("method") in ("GET", "HEAD")
            and scope["path"] in self._public_files
        )

    def _identify(self, scope: Scope) -> Access | None:
        given = _token_from(scope)
        if not given:
            return None
        digest = _digest(given)  # constant-time comparisons, independent of the lengths
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return Access(Role.ADMIN, client=client_address(scope))
        if hmac.compare_digest(digest, self._digest):
            return Access(Role.SERVICE, client=client_address(scope))
        session_id = session_of(scope["path"])
        manager = getattr(scope["app"].state, "manager", None) if "app" in scope else None
        if session_id is None or manager is None:
            return None
        try:
            role = manager.get(session_id).tokens.role_of(given)
        except SessionNotFoundError:
            return None
        if role is None:
            return None
        return Access(Role(role.value), client=f"session:{session_id}", session_id=session_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._is_public(scope):
            await self.app(scope, receive, send)
            return
        access = self._identify(scope)
        method = "WS" if scope["type"] == "websocket" else scope.get("method", "GET")
        if access is not None and allowed(access, method, scope["path"]):
            scope.setdefault("state", {})["access"] = access
            await self.app(scope, receive, send)
            return
        if access is None:
            status, code, reason = 401, "unauthorized", "missing or bad token"
        else:
            status, code, reason = 403, "forbidden", f"a {access.role.value} token may not do this"
        if scope["type"] == "http":
            headers = {"www-authenticate": "Bearer"} if status == 401 else {}
            refusal = JSONResponse(
                {"code": code, "message": reason}, status_code=status, headers=headers
            )
            await refusal(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        # Accept first so the client sees a close code (a refused handshake is only "403").
        await send({"type": "websocket.accept", "subprotocol": chosen_subprotocol(scope)})
        close_code = WS_CLOSE_UNAUTHORIZED if status == 401 else WS_CLOSE_FORBIDDEN
        await send({"type": "websocket.close", "code": close_code, "reason": reason})


def _static_paths(static_dir: Path | None) -> frozenset[str]:
    """URL paths of the client's files: "/", "/index.html", "/app.js", ..."""
    if static_dir is None or not Path(static_dir).is_dir():
        return frozenset()
    root = Path(static_dir)
    files = {"/" + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return frozenset(files | {"/"})
