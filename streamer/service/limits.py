"""Request body cap for every HTTP route (JSON bodies, WHIP/SDP offers...), and 422 replies
that do not echo the request back.

`BodyLimitMiddleware` answers 413 at once, before reading anything, when `Content-Length`
says the body is too large; a body without a length (chunked) is counted as it is read and
the read fails with `BodyTooLargeError` (413) as soon as it passes the limit, so no route ever
holds more than `max_bytes` of a body in memory.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamer.safejson import MAX_ECHO_BYTES

PAYLOAD_TOO_LARGE = "payload_too_large"


class BodyTooLargeError(HTTPException):
    """A request body above the limit (an HTTPException so FastAPI's body parsing passes it
    through instead of turning it into a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"request body above {max_bytes} bytes")
        self.max_bytes = max_bytes


def _too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse(
        {"code": PAYLOAD_TOO_LARGE, "message": f"request body above {max_bytes} bytes"},
        status_code=413,
        headers={"connection": "close"},
    )


class BodyLimitMiddleware:
    """Pure ASGI middleware capping HTTP request bodies at `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)  # the body is never read
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; an unparsable one counts as too large (-> 413)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 19 else 1 << 62
    return None


async def body_too_large_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI handler: a `BodyTooLargeError` becomes a 413 JSON response."""
    max_bytes = exc.max_bytes if isinstance(exc, BodyTooLargeError) else 0
    return _too_large(max_bytes)


def _clip_loc(part: Any) -> Any:
    return part[:MAX_ECHO_BYTES] if isinstance(part, str) else part


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with what failed and why, but none of the input (FastAPI's default echoes it all)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [_clip_loc(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", ""))[:MAX_ECHO_BYTES],
            "type": err.get("type", ""),
        }
        for err in errors[:10]
    ]
    return JSONResponse(
        {"code": "bad_request", "message": "the request failed validation", "detail": detail},
        status_code=422,
    )
