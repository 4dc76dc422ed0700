"""WHIP ingest (RFC 9725, WebRTC-HTTP Ingestion Protocol): publish video with one HTTP POST.

- `POST /whip` (body: the SDP offer, `Content-Type: application/sdp`) opens a new "webrtc"
  session fed by the publisher; the session lives as long as the publisher (its id is in the
  `X-Session-Id` header, for websocket clients: `/sessions/{id}/ws`; its capability tokens
  in `X-Session-Token` and `X-Viewer-Token`).
- `POST /sessions/{id}/whip` publishes into an existing "webrtc" session (which outlives it).

Both answer `201 Created` with the SDP answer (`application/sdp`) and a `Location` header,
the WHIP session URL `/sessions/{id}/whip/{peer_id}`; `DELETE` on it ends the publication.
The URL carries the session id like every session-scoped URL, so a proxy in front of several
instances routes it to the session's owner (docs/deploy.md). The answer holds
every ICE candidate (aiortc gathers before answering), so trickle ICE and ICE restarts are not
offered: `PATCH` answers 405. Other answers: 415 for another content type, 400 for an SDP
that cannot be answered or offers no video (checked before a session is created), 413 for
one above 64 KiB, 409 when the session already has a publisher or is not a webrtc session,
401 without the bearer token (when the service has one; see `streamer.service.auth`).

Media handling lives in `streamer.webrtc` (`PeerRole.WHIP`: video in; audio is declined).
"""

from __future__ import annotations

import asyncio

from aiortc import RTCSessionDescription
from fastapi import APIRouter, Request, Response

from streamer.access import access_of
from streamer.sessions import Session, SessionCreate, SessionManager, SessionNotFoundError
from streamer.webrtc.peer import MAX_SDP_BYTES, OfferError, PeerRole, WebRTCError
from streamer.webrtc.routes import session_manager, webrtc_service
from streamer.webrtc.sdp import offer_problem

SDP_MEDIA_TYPE = "application/sdp"


class UnsupportedMediaTypeError(WebRTCError):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLargeError(WebRTCError):
    code = "payload_too_large"
    status = 413


def whip_location(session_id: str, peer_id: str) -> str:
    """The WHIP session URL (path) of a peer publishing into session `session_id`."""
    return f"/sessions/{session_id}/whip/{peer_id}"


async def _read_offer(request: Request) -> RTCSessionDescription:
    """The request's SDP offer; raises UnsupportedMediaTypeError / PayloadTooLargeError."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != SDP_MEDIA_TYPE:
        shown = media_type or "no content type"
        raise UnsupportedMediaTypeError(f"the offer must be {SDP_MEDIA_TYPE}, got {shown!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SDP_BYTES:
            raise PayloadTooLargeError(f"the offer is larger than {MAX_SDP_BYTES} bytes")
    sdp = body.decode("utf-8", errors="replace")
    problem = offer_problem(sdp, needs=("video",))
    if problem is not None:  # before a session is created for it
        raise OfferError(problem)
    return RTCSessionDescription(sdp=sdp, type="offer")


async def _publish(
    request: Request, session: Session, offer: RTCSessionDescription, *, owns_session: bool
) -> Response:
    peer = await webrtc_service(request).connect(
        session, offer, role=PeerRole.WHIP, owns_session=owns_session
    )
    return Response(
        content=peer.pc.localDescription.sdp,
        status_code=201,
        media_type=SDP_MEDIA_TYPE,
        headers={"Location": whip_location(session.id, peer.id), "X-Session-Id": session.id},
    )


def whip_router() -> APIRouter:
    """WHIP routes; they use the `WebRTCService` that `webrtc_router()`'s lifespan builds, so
    include both in the app."""
    router = APIRouter()

    @router.post("/whip", status_code=201)
    async def publish_new(request: Request) -> Response:
        offer = await _read_offer(request)  # before creating a session for it
        manager = session_manager(request)
        owner = access_of(request.scope).client
        session = await asyncio.to_thread(
            manager.create, SessionCreate(source="webrtc"), owner=owner
        )
        published = False
        try:
            # owns_session: once published, the peer deletes the session when it closes.
            response = await _publish(request, session, offer, owns_session=True)
            # The session's capabilities, for websocket viewers of this publication.
            response.headers["X-Session-Token"] = session.tokens.control
            response.headers["X-Viewer-Token"] = session.tokens.viewer
            published = True
            return response
        finally:
            if not published:
                await asyncio.to_thread(_delete_quietly, manager, session.id)

    @router.post("/sessions/{session_id}/whip", status_code=201)
    async def publish_existing(session_id: str, request: Request) -> Response:
        session = session_manager(request).get(session_id)
        offer = await _read_offer(request)
        return await _publish(request, session, offer, owns_session=False)

    @router.delete("/sessions/{session_id}/whip/{peer_id}")
    async def stop(session_id: str, peer_id: str, request: Request) -> Response:
        peer = webrtc_service(request).get(peer_id, session_id=session_id)
        await peer.close()
        return Response(status_code=200)

    @router.patch("/sessions/{session_id}/whip/{peer_id}")
    async def patch(session_id: str, peer_id: str) -> Response:
        # RFC 9725: a WHIP session without trickle ICE / ICE restarts answers PATCH with 405.
        return Response(status_code=405, headers={"Allow": "DELETE"})

    return router


def _delete_quietly(manager: SessionManager, session_id: str) -> None:
    try:
        manager.delete(session_id)
    except SessionNotFoundError:  # the failed peer's close already deleted it
        pass
