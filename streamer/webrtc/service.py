"""`WebRTCService`: the app's registry of WebRTC peers (viewers, WHIP publishers) by session."""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiortc import RTCSessionDescription

from streamer.overlay import OverlayStyle
from streamer.sessions import (
    Session,
    SessionEndedError,
    SessionManager,
    SessionNotFoundError,
    SessionState,
)
from streamer.settings import Settings
from streamer.webrtc.consent import configure_consent
from streamer.webrtc.media import configure_ice_hosts, configure_ice_public_ip
from streamer.webrtc.peer import (
    MAX_PEERS_PER_SESSION,
    OfferError,
    PeerLimitError,
    PeerNotFoundError,
    PeerRole,
    WebRTCPeer,
)
from streamer.webrtc.sdp import offer_problem

logger = logging.getLogger(__name__)


class WebRTCService:
    """The app's registry of peer connections (one per app, on `app.state.webrtc`).

    manager: the session manager (to delete sessions a WHIP publisher created).
    Applies the `ice_hosts` and `ice_public_ip` settings when built.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        manager: SessionManager,
        style: OverlayStyle | None = None,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.style = style
        self._peers: dict[str, WebRTCPeer] = {}
        self._publishers: dict[str, WebRTCPeer] = {}  # session id -> its publishing peer
        configure_ice_hosts(settings.ice_hosts)
        public_ip = settings.ice_public_ip
        configure_ice_public_ip(None if public_ip is None else str(public_ip))
        configure_consent(settings.peer_silence_timeout)  # vanished peers: seconds, not 30 s

    async def connect(
        self,
        session: Session,
        offer: RTCSessionDescription,
        *,
        role: PeerRole,
        owns_session: bool = False,
        read_only: bool = False,
    ) -> WebRTCPeer:
        """Answer `offer` with a new peer bound to `session` (answer in
        `peer.pc.localDescription`). owns_session: delete the session when the peer goes.
        read_only: a viewer's peer: it may not publish video nor send prompts.
        Raises SessionEndedError, PeerLimitError, OfferError, PeerConflictError."""
        if session.state not in (SessionState.WAITING, SessionState.RUNNING):
            raise SessionEndedError(f"session {session.id} is {session.state.value}")
        needs = ("video",) if role is PeerRole.WHIP else ("video", "application")
        problem = offer_problem(offer.sdp, needs=needs)
        if problem is not None:
            raise OfferError(problem)
        if len(self.peers(session.id)) >= MAX_PEERS_PER_SESSION:
            raise PeerLimitError(f"session {session.id} has {MAX_PEERS_PER_SESSION} peers")
        peer = WebRTCPeer(
            peer_id=uuid.uuid4().hex[:12],
            session=session,
            role=role,
            settings=self.settings,
            style=self.style,
            on_closed=self._forget,
            owns_session=owns_session,
            read_only=read_only,
        )
        self._peers[peer.id] = peer
        try:
            await peer.negotiate(offer, claim_publisher=self._claim_publisher)
        except BaseException:
            await peer.close()
            raise
        logger.info(
            "peer %s: %s for session %s%s",
            peer.id,
            role.value,
            session.id,
            " (publishing)" if peer.publishing else "",
        )
        return peer

    def _claim_publisher(self, peer: WebRTCPeer) -> bool:
        """Make `peer` its session's publisher if the session takes video and has none.

        Called synchronously on the loop while the offer is applied, so two concurrent offers
        cannot both win."""
        session = peer.session
        if session.push_source is None or session.id in self._publishers:
            return False
        self._publishers[session.id] = peer
        return True

    def peers(self, session_id: str | None = None) -> list[WebRTCPeer]:
        """Open peers, all or those of one session."""
        return [p for p in self._peers.values() if session_id is None or p.session.id == session_id]

    def get(self, peer_id: str, *, session_id: str | None = None) -> WebRTCPeer:
        """The peer `peer_id` (of session `session_id` when given); raises
        PeerNotFoundError."""
        peer = self._peers.get(peer_id)
        if peer is None or (session_id is not None and peer.session.id != session_id):
            raise PeerNotFoundError(f"no peer {peer_id!r}")
        return peer

    async def _forget(self, peer: WebRTCPeer) -> None:
        self._peers.pop(peer.id, None)
        if self._publishers.get(peer.session.id) is peer:
            del self._publishers[peer.session.id]
        if peer.owns_session:
            try:
                await asyncio.to_thread(self.manager.delete, peer.session.id)
            except SessionNotFoundError:
                pass

    async def close(self) -> None:
        """Close every peer (app shutdown)."""
        await asyncio.gather(*(p.close() for p in list(self._peers.values())))
