"""Typed errors of the client: HTTP answers by status, websocket error replies by code."""

from __future__ import annotations


class ClientError(Exception):
    """Anything the client reports (base class)."""


class HTTPError(ClientError):
    """An HTTP request the server refused: `status`, the server's `code` and `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class AuthError(HTTPError):
    """401: no token, or the wrong one (also a websocket closed with 4401)."""


class ForbiddenError(HTTPError):
    """403: the token is known but may not do this (a viewer token prompting, a session token
    on another session, a non-admin listing sessions); also a websocket closed with 4403."""


class NotFoundError(HTTPError):
    """404: no such session (or peer)."""


class ConflictError(HTTPError):
    """409: the session cannot take this (it already has a publisher, wrong source kind)."""


class LimitError(HTTPError):
    """413 / 429: a size or count limit of the server (GET /limits lists them)."""


class RequestError(ClientError):
    """The server answered a websocket request with an `error` message (`code`, `message`;
    `retry_after` seconds with "rate_limited")."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retry_after = code, message, retry_after


class SessionEndedError(ClientError):
    """The session ended (its `end` message came, or the websocket closed) before a reply."""


_BY_STATUS = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: LimitError,
}


def http_error(status: int, body: object) -> HTTPError:
    """The typed error for an HTTP answer (body: the decoded JSON, or text)."""
    code, message = "http_error", str(body)
    if isinstance(body, dict):
        code = str(body.get("code", code))
        message = str(body.get("message", body.get("detail", message)))
    cls = _BY_STATUS.get(status, LimitError if status == 429 else HTTPError)
    return cls(status, code, message)
