"""HTTP routes of the WebRTC service: `POST /sessions/{id}/webrtc/offer`, listing and closing
peers, and the lifespan that builds the app's `WebRTCService` (peers live in `streamer.webrtc`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiortc import RTCSessionDescription
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field

from streamer.access import access_of
from streamer.sessions import ServiceNotReadyError, SessionManager
from streamer.webrtc.peer import MAX_SDP_BYTES, OfferError, PeerRole
from streamer.webrtc.service import WebRTCService


class SdpOffer(BaseModel):
    """Body of POST /sessions/{id}/webrtc/offer (an RTCSessionDescription)."""

    sdp: str = Field(min_length=1, max_length=MAX_SDP_BYTES)
    type: str = "offer"


class SdpAnswer(BaseModel):
    sdp: str
    type: str = "answer"
    peer_id: str


class PeerInfo(BaseModel):
    id: str
    session_id: str
    role: str
    connection_state: str
    publishing: bool
    data_channel: bool
    frames_received: int
    frames_pushed: int
    frames_sent: int
    messages_sent: int
    messages_skipped: int
    created_at: float


class PeerList(BaseModel):
    peers: list[PeerInfo]


def webrtc_service(request: Request) -> WebRTCService:
    """The app's WebRTCService; raises ServiceNotReadyError before startup."""
    service = getattr(request.app.state, "webrtc", None)
    if service is None:
        raise ServiceNotReadyError("the WebRTC service is not running")
    return service


def session_manager(request: Request) -> SessionManager:
    """FastAPI dependency: the app's SessionManager; raises ServiceNotReadyError
    until the model is loaded."""
    manager = request.app.state.manager
    if manager is None or not manager.ready:
        raise ServiceNotReadyError("the model is not loaded yet")
    return manager


def webrtc_router() -> APIRouter:
    """Routes of `POST /sessions/{id}/webrtc/offer` and peer management; its lifespan builds
    the app's `WebRTCService` (app.state.webrtc) and closes every peer at shutdown.
    Include it in the app before any router that uses the service (whip)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.webrtc = WebRTCService(settings=app.state.settings, manager=app.state.manager)
        try:
            yield
        finally:
            service, app.state.webrtc = app.state.webrtc, None
            await service.close()

    router = APIRouter(lifespan=lifespan)

    @router.post("/sessions/{session_id}/webrtc/offer", response_model=SdpAnswer)
    async def offer(session_id: str, body: SdpOffer, request: Request) -> Any:
        session = session_manager(request).get(session_id)
        if body.type != "offer":
            raise OfferError(f"expected type 'offer', got {body.type!r}")
        peer = await webrtc_service(request).connect(
            session,
            RTCSessionDescription(sdp=body.sdp, type="offer"),
            role=PeerRole.OFFER,
            read_only=access_of(request.scope).read_only,
        )
        answer = peer.pc.localDescription
        return SdpAnswer(sdp=answer.sdp, type=answer.type, peer_id=peer.id)

    @router.get("/sessions/{session_id}/webrtc")
    async def list_peers(session_id: str, request: Request) -> PeerList:
        session_manager(request).get(session_id)  # 404 for an unknown session
        peers = webrtc_service(request).peers(session_id)
        return PeerList(peers=[PeerInfo(**p.info()) for p in peers])

    @router.delete("/sessions/{session_id}/webrtc/{peer_id}", status_code=204)
    async def close_peer(session_id: str, peer_id: str, request: Request) -> Response:
        peer = webrtc_service(request).get(peer_id, session_id=session_id)
        await peer.close()
        return Response(status_code=204)

    return router
