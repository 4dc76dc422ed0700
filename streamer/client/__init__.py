"""A client library for sam2-stream (docs/protocol.md), sync and async.

    from streamer.client import Client

    with Client("http://127.0.0.1:8000", token="...") as client:
        session = client.open_session("clip.mp4")       # a file, "rtsp://...", or "webrtc"
        reply = session.add_points([[200, 120]], [1])    # a click: the refined masklet
        for frame in session.frames(limit=30):           # masklets as numpy masks
            print(frame.frame_idx, frame.pts, [(m.obj_id, m.mask.sum()) for m in frame.objects])

`AsyncClient` / `AsyncSession` are the same in `async` form; `AsyncSession.publish(track)`
sends an aiortc video track over WHIP into a "webrtc" session. Errors are typed
(`streamer.client.errors`).

Authorization (docs/protocol.md): `token` is the service token, which creates sessions; a
session opened here is driven with its own capability token (kept from the creation answer,
`session.token`). To join a session opened elsewhere, pass its control or viewer token:
`client.session(session_id, token=...)`.
"""

from streamer.client.aio import AsyncClient, AsyncSession
from streamer.client.errors import (
    AuthError,
    ClientError,
    ConflictError,
    ForbiddenError,
    HTTPError,
    LimitError,
    NotFoundError,
    RequestError,
    SessionEndedError,
)
from streamer.client.messages import Frame, Masklet, Reply
from streamer.client.sync import Client, Session

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "AuthError",
    "Client",
    "ClientError",
    "ConflictError",
    "ForbiddenError",
    "Frame",
    "HTTPError",
    "LimitError",
    "Masklet",
    "NotFoundError",
    "Reply",
    "RequestError",
    "Session",
    "SessionEndedError",
]
