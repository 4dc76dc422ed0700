"""Who may do what (docs/protocol.md, "Authorization"): the credential a request carries is
mapped to an `Access`, which the rules below allow or refuse per path and method.

| credential            | may                                                              |
|-----------------------|------------------------------------------------------------------|
| admin (`admin_token`) | everything: list sessions, /metrics, drain, any session          |
| service (`auth_token`)| create sessions (`POST /sessions`, `POST /whip`), read /limits;  |
|                       | end a WHIP publication at its Location URL (RFC 9725)            |
| session control token | everything on its own session (view, prompt, publish, delete)    |
| session viewer token  | read its own session: info, websocket and WebRTC (no prompts)    |

A top-level module, not in `streamer.service`: the WebRTC routes (`streamer.webrtc`) read a
request's access too, and the service imports them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from starlette.types import Scope

from streamer.sessions.capabilities import SessionRole


class Role(str, enum.Enum):
    ADMIN = "admin"
    SERVICE = "service"
    CONTROL = SessionRole.CONTROL.value
    VIEWER = SessionRole.VIEWER.value


@dataclass(frozen=True)
class Access:
    """What a request's credential grants. session_id: the session a capability is bound to
    (None for admin/service). client: the key per-client limits count by."""

    role: Role
    client: str
    session_id: str | None = None

    @property
    def read_only(self) -> bool:
        """True for a viewer token: it watches, its prompts get `forbidden`."""
        return self.role is Role.VIEWER


FULL_ACCESS_CLIENT = "local"
_SESSION_PATH = re.compile(r"^/sessions/([^/]+)(/.*)?$")
_ADMIN_ONLY = ("/metrics", "/admin/")
_SERVICE_POSTS = frozenset({"/sessions", "/whip"})
_ANY_CREDENTIAL = frozenset({"/limits", "/readyz", "/docs", "/openapi.json"})


def session_of(path: str) -> str | None:
    """The session id of a session-scoped path (`/sessions/{id}` and below), else None."""
    match = _SESSION_PATH.match(path)
    return match.group(1) if match else None


def allowed(access: Access, method: str, path: str) -> bool:
    """True when `access` may do `method` (HTTP method, or "WS" for a websocket) on `path`."""
    if access.role is Role.ADMIN:
        return True
    match = _SESSION_PATH.match(path)
    if match is not None:
        session_id, rest = match.group(1), match.group(2) or ""
        if access.role is Role.SERVICE:
            # A WHIP client ends its publication with the credential it published with; the
            # Location URL (session id + random peer id) names that one publication only.
            return method in ("DELETE", "PATCH") and re.fullmatch(r"/whip/[^/]+", rest) is not None
        if access.session_id != session_id:
            return False
        if access.role is Role.CONTROL:
            return True
        # Viewer: read, watch over the websocket or WebRTC (its peer cannot publish).
        return method in ("GET", "HEAD", "WS") or (method == "POST" and rest == "/webrtc/offer")
    if path == "/sessions" and method == "GET" or path.startswith(_ADMIN_ONLY):
        return False
    if method == "POST" and path in _SERVICE_POSTS:
        return access.role is Role.SERVICE
    if path in _ANY_CREDENTIAL or path.startswith("/docs"):
        return True
    return access.role is Role.SERVICE


def client_address(scope: Scope) -> str:
    """The client's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    client = scope.get("client")
    return f"addr:{client[0]}" if client else FULL_ACCESS_CLIENT


def access_of(scope: Scope) -> Access:
    """The request's `Access` (set by `BearerAuthMiddleware`); full access when auth is off."""
    access = scope.get("state", {}).get("access")
    return access if access is not None else Access(Role.ADMIN, client=client_address(scope))
