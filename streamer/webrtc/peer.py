"""WebRTC in and out of a session (aiortc): video in, overlay video and masklets out.

One `WebRTCPeer` per peer connection, bound to one session and registered in the app's
`WebRTCService`. Two roles:

- `PeerRole.OFFER` (`POST /sessions/{id}/webrtc/offer`, JSON `{sdp, type}` as in aiortc's
  server example): the client's video track (if it sends one) feeds the session; the answer
  sends back an overlay video track (the latest frame with the latest masks drawn) and, on a
  client-created data channel labelled "masklets", the same JSON messages as the websocket
  (`hello`, `frame`, `ack`, `error`, `end`); prompts may be sent on that channel too.
- `PeerRole.WHIP` (`streamer.webrtc.whip`, RFC 9725): ingest only, results go to websocket clients.

Threads: aiortc decodes and encodes on threads of its own; the event loop only moves frames
around. Incoming frames are converted to RGB on an executor thread and pushed into the
session's `PushSource` (latest frame wins); the `DeviceScheduler` thread runs the model and
hands each result back through a result listener; overlays are drawn on an executor thread.
Nothing here runs the model, and nothing blocks the loop.

Timestamps: frames keep the sender's `pts` / `time_base` (RTP clock, 1/90000) end to end, so a
`frame` message and the overlay frame drawn from the same input carry the same `pts`. aiortc's
receiver counts pts from the first frame it gets (browsers show the raw RTP timestamp); the
overlay track therefore sends the stream's first frame first, so an aiortc client's overlay pts
equal the message pts.

A peer is freed (tasks cancelled, listener and subscriber removed, connection closed) when its
connection fails or closes, its incoming track ends, its session is deleted, or on
`DELETE /sessions/{id}/webrtc/{peer_id}`. A session outlives its peers: a client may
reconnect and publish again (sessions created by `POST /whip` are the exception, see whip.py).

Loopback / closed networks: aioice gathers host candidates on every interface but loopback;
the `ice_hosts` setting (e.g. ["127.0.0.1"]) replaces that list (`configure_ice_hosts`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from sam2_video import FrameResult
from streamer.ingest import FrameLimits, VideoFrame
from streamer.overlay import OverlayStyle
from streamer.protocol import FrameMessage
from streamer.sessions import (
    Session,
    SessionError,
)
from streamer.sessions.connection import handle_client_message, hello_message
from streamer.sessions.subscribers import Subscriber
from streamer.settings import Settings
from streamer.webrtc.media import OverlayTrack

logger = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "masklets"
MAX_PEERS_PER_SESSION = 8
# Frame messages are skipped while this much is still queued on the data channel (a slow
# client gets fewer, current frames instead of a growing backlog); replies are never skipped.
MAX_BUFFERED_BYTES = 1 << 20
# How long the first session message waits for the client's data channel to open (an
# answered peer subscribes before the channel is up); after that, messages without an open
# channel are skipped.
CHANNEL_OPEN_WAIT_S = 10.0
MAX_SDP_BYTES = 64 << 10
# A watchdog tick this much later than due means the server itself stalled (not the peer).
STALL_SLACK_S = 0.25
# Timestamps given to frames that arrive without any (RTP's video clock).


# --- errors ----------------------------------------------------------------------------------


class WebRTCError(SessionError):
    """A WebRTC request the service cannot serve."""

    code = "webrtc_error"
    status = 400


class OfferError(WebRTCError):
    """The SDP offer is malformed or cannot be answered (no common codec...)."""

    code = "bad_offer"
    status = 400


class PeerConflictError(WebRTCError):
    """The session cannot take this peer's video (not a webrtc session, or one publishes)."""

    code = "conflict"
    status = 409


class PeerLimitError(WebRTCError):
    code = "too_many_peers"
    status = 429


class PeerNotFoundError(WebRTCError):
    code = "unknown_peer"
    status = 404


class PeerRole(str, enum.Enum):
    OFFER = "offer"  # video in (optional), overlay video + "masklets" data channel out
    WHIP = "whip"  # RFC 9725 ingest: video in only


@dataclass
class PeerStats:
    frames_received: int = 0  # decoded frames from the client's video track
    frames_pushed: int = 0  # of those, handed to the session's source
    messages_sent: int = 0  # data channel messages sent
    messages_skipped: int = 0  # frame messages not sent (channel not open, or backlog)


class WebRTCPeer:
    """One peer connection bound to one session. Built and negotiated by `WebRTCService`."""

    def __init__(
        self,
        *,
        peer_id: str,
        session: Session,
        role: PeerRole,
        settings: Settings,
        style: OverlayStyle | None,
        on_closed: Callable[[WebRTCPeer], Awaitable[None]],
        owns_session: bool = False,
        read_only: bool = False,
    ) -> None:
        self.id = peer_id
        self.read_only = read_only  # a viewer token's peer: no video in, no prompts
        self.session = session
        self.role = role
        self.settings = settings
        self.owns_session = owns_session
        self.created_at = time.time()
        self.stats = PeerStats()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.overlay: OverlayTrack | None = (
            OverlayTrack(style=style) if role is PeerRole.OFFER else None
        )
        self.publishing = False  # this peer's video feeds the session
        self.closed = asyncio.Event()
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task] = set()
        self._channel: RTCDataChannel | None = None
        self._channel_opened = asyncio.Event()
        self._waited_for_channel = False
        self._subscriber: Subscriber | None = None
        self._conflict: str | None = None
        self._closing = False
        self._connected = asyncio.Event()  # ICE/DTLS up (connect_timeout watches it)
        self._last_frame = time.monotonic()  # last video frame in (peer_silence_timeout)
        self._frame_limits = FrameLimits.from_settings(settings)

    # --- negotiation (the service calls this once) -----------------------------------------

    async def negotiate(
        self, offer: RTCSessionDescription, *, claim_publisher: Callable[[WebRTCPeer], bool]
    ) -> None:
        """Apply the client's offer and create the answer (`self.pc.localDescription`).

        claim_publisher: asked when the client sends video; True if the session takes it (a
        webrtc session that no other peer publishes to), which makes this peer its publisher.
        Raises OfferError, or PeerConflictError when the client sends video that the session
        cannot take.
        """
        self.pc.on("track", lambda track: self._on_track(track, claim_publisher))
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)
        try:
            await self.pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc raises assorted errors for bad SDP
            raise OfferError(f"cannot apply the SDP offer: {exc}") from exc
        if self._conflict is not None:
            raise PeerConflictError(self._conflict)
        if self.overlay is not None and any(t.kind == "video" for t in self.pc.getTransceivers()):
            # Joins the offered video transceiver: sendrecv if the client sends, else sendonly.
            self.pc.addTrack(self.overlay)
        try:
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:
            raise OfferError(f"cannot answer the SDP offer: {exc}") from exc
        if self.role is PeerRole.OFFER:
            # A viewer is a consumer: it starts an "on_connect" session.
            self._ensure_subscriber()
        if self.overlay is not None:
            self.session.add_result_listener(self._on_result)
        self._spawn(self._watchdog(), "watchdog")

    async def _watchdog(self) -> None:
        """Close a peer that never connects (`connect_timeout`), or whose client's video
        stops without the track ending (`peer_silence_timeout`: a vanished client, noticed in
        seconds rather than by the 30 s ICE consent expiry). Silence is measured from when the
        server last could have seen a packet: a stall of the loop or the process (a late
        tick) restarts it, so a server stall never by itself closes a healthy publisher."""
        connect_timeout = self.settings.connect_timeout
        if connect_timeout:
            try:
                await asyncio.wait_for(self._connected.wait(), connect_timeout)
            except asyncio.TimeoutError:
                logger.info("peer %s: not connected after %.1f s", self.id, connect_timeout)
                self._schedule_close()
                return
        silence = self.settings.peer_silence_timeout
        if not silence:
            return
        tick = min(1.0, silence / 4)
        self._last_frame = awake = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - awake > 2 * tick + STALL_SLACK_S:
                # The loop or the whole process stalled (a long step, SIGSTOP): packets sent
                # meanwhile are still unread, so silence counts from when we could see again.
                logger.info("peer %s: the server stalled %.1f s", self.id, now - awake - tick)
                self._last_frame = max(self._last_frame, now)
            awake = now
            if self.publishing and now - self._last_frame > silence:
                logger.info("peer %s: no video for %.1f s: closing", self.id, silence)
                self._schedule_close()
                return

    def _on_track(
        self, track: MediaStreamTrack, claim_publisher: Callable[[WebRTCPeer], bool]
    ) -> None:
        transceiver = next(
            (t for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )
        if track.kind == "video" and not self.publishing:
            if self.read_only or not claim_publisher(self):
                reason = (
                    "a viewer token may not publish"
                    if self.read_only
                    else "another peer publishes to it"
                    if self.session.push_source is not None
                    else f"its source is {self.session.spec!r}, not webrtc"
                )
                self._conflict = f"session {self.session.id} cannot take this video: {reason}"
                return
            self.publishing = True
            self._spawn(self._pump(track), "pump")
            return
        # Audio, or a second video track: decline it so nothing is sent or decoded.
        logger.info("peer %s: declining the client's %s track", self.id, track.kind)
        if transceiver is not None:
            transceiver.direction = "inactive"

    # --- media in --------------------------------------------------------------------------

    async def _pump(self, track: MediaStreamTrack) -> None:
        """Client video -> RGB (executor) -> the session's PushSource (+ our overlay track).

        Runs until the client's track ends. Once the session's source has ended, frames are
        still taken (and dropped) so aiortc's receive queue cannot grow.
        """
        source = self.session.push_source
        ingesting = source is not None
        try:
            while True:
                frame = await track.recv()
                self.stats.frames_received += 1
                self._last_frame = time.monotonic()
                if not ingesting or source is None:
                    continue
                if not isinstance(frame, av.VideoFrame):  # aiortc types `recv()` widely
                    raise TypeError(f"expected a video frame, got {type(frame).__name__}")
                problem = self._frame_limits.problem(frame.width, frame.height)
                image = None
                if problem is not None:
                    # Refused, not downscaled: converting it would allocate the full frame.
                    logger.info("peer %s: %s: ending its session's source", self.id, problem)
                    source.finish(error=f"webrtc video: {problem}")
                else:
                    image = await self._loop.run_in_executor(None, _to_rgb, frame)  # (H, W, 3)
                if image is None or not source.push(
                    image, pts=frame.pts, time_base=frame.time_base
                ):
                    logger.info("peer %s: the session's source has ended", self.id)
                    ingesting = False
                    if self._subscriber is None:
                        self._schedule_close()
                    # else the forward loop closes the peer once the session's last
                    # messages (its `end`) are sent
                    continue
                self.stats.frames_pushed += 1
                if self.overlay is not None:
                    self.overlay.push_frame(image, frame.pts, frame.time_base)
        except MediaStreamError:
            logger.info("peer %s: the client's video ended", self.id)
            self._schedule_close()
        except Exception:
            logger.exception("peer %s: receiving video failed", self.id)
            self._schedule_close()

    # --- results out -----------------------------------------------------------------------

    def _on_result(self, frame: VideoFrame, result: FrameResult) -> None:
        """Worker thread, after each processed frame: must be quick and must not block."""
        overlay = self.overlay
        if overlay is None:
            return
        overlay.set_objects(result.obj_ids, result.masks)
        if not self.publishing:
            # A viewer of another source: its processed frames are the video.
            try:
                self._loop.call_soon_threadsafe(
                    overlay.push_frame, frame.image, frame.pts, frame.time_base
                )
            except RuntimeError:  # the loop is closed: the service is going away
                pass

    def _ensure_subscriber(self) -> None:
        if self._subscriber is not None or self._closing:
            return
        self._subscriber = self.session.subscribe(
            loop=self._loop, options=self.settings.default_output, name=f"webrtc-{self.id}"
        )
        self._spawn(self._forward(self._subscriber), "forward")

    async def _forward(self, subscriber: Subscriber) -> None:
        """Session messages -> the data channel; runs until the session closes."""
        try:
            while True:
                message = await subscriber.get()
                if message is None:
                    logger.info("peer %s: session %s closed", self.id, self.session.id)
                    return
                if not self._waited_for_channel:
                    self._waited_for_channel = True
                    try:
                        await asyncio.wait_for(self._channel_opened.wait(), CHANNEL_OPEN_WAIT_S)
                    except asyncio.TimeoutError:
                        pass
                channel = self._channel
                is_frame = isinstance(message, FrameMessage)
                if (
                    channel is None
                    or channel.readyState != "open"
                    or (is_frame and channel.bufferedAmount > MAX_BUFFERED_BYTES)
                ):
                    self.stats.messages_skipped += 1
                    continue
                channel.send(message.model_dump_json())
                self.stats.messages_sent += 1
        finally:
            self._schedule_close()

    # --- data channel in -------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL_LABEL or self._channel is not None:
            logger.info("peer %s: ignoring data channel %r", self.id, channel.label)
            return
        self._channel = channel
        channel.on("message", self._on_channel_message)
        if channel.readyState == "open":
            self._on_channel_open()
        else:
            channel.on("open", self._on_channel_open)

    def _on_channel_open(self) -> None:
        self._ensure_subscriber()
        self._send_hello()
        self._channel_opened.set()

    def _send_hello(self) -> None:
        if self._channel is not None and self._subscriber is not None:
            hello = hello_message(self.session, self.settings, self._subscriber)
            self._channel.send(hello.model_dump_json())

    def _on_channel_message(self, data: str | bytes) -> None:
        """A client message on the data channel: handled as on the websocket."""
        if self._subscriber is not None:
            handle_client_message(
                self.session,
                self._subscriber,
                data,
                max_bytes=self.settings.max_message_bytes,
                read_only=self.read_only,
            )

    # --- lifecycle -------------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.info("peer %s: connection %s", self.id, state)
        if state == "connected":
            self._connected.set()
        if state in ("failed", "closed"):
            self._schedule_close()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"webrtc-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_close(self) -> None:
        if not self._closing:
            # A separate task: close() cancels the task that may be calling us.
            asyncio.ensure_future(self.close())

    async def close(self) -> None:
        """Free everything this peer holds (idempotent); the session itself stays."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        try:
            self.session.remove_result_listener(self._on_result)
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.overlay is not None:
                self.overlay.stop()
            if self._subscriber is not None:
                self.session.unsubscribe(self._subscriber)
                self._subscriber.close()
            await self.pc.close()
        finally:
            logger.info("peer %s: closed (%s)", self.id, self.stats)
            self.closed.set()
            await self._on_closed(self)

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary (the `PeerInfo` schema)."""
        return {
            "id": self.id,
            "session_id": self.session.id,
            "role": self.role.value,
            "connection_state": self.pc.connectionState,
            "publishing": self.publishing,
            "data_channel": self._channel is not None and self._channel.readyState == "open",
            "frames_received": self.stats.frames_received,
            "frames_pushed": self.stats.frames_pushed,
            "frames_sent": self.overlay.frames_sent if self.overlay else 0,
            "messages_sent": self.stats.messages_sent,
            "messages_skipped": self.stats.messages_skipped,
            "created_at": self.created_at,
        }


def _to_rgb(frame: av.frame.Frame | av.Packet) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a received video frame (aiortc types `recv()` more widely)."""
    if not isinstance(frame, av.VideoFrame):
        raise TypeError(f"expected a video frame, got {type(frame).__name__}")
    return frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
