"""WebRTC media pieces: the overlay video track sent back to peers, and ICE host selection."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import aioice.ice
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCIceCandidate
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcicetransport import RTCIceGatherer

from streamer.overlay import OverlayStyle, draw_overlay

_VIDEO_TIME_BASE = Fraction(1, 90_000)
_default_get_host_addresses = aioice.ice.get_host_addresses
_default_get_local_candidates = RTCIceGatherer.getLocalCandidates


def configure_ice_hosts(hosts: Sequence[str]) -> None:
    """Gather ICE host candidates on exactly `hosts` (IP addresses); empty restores aioice's
    default (every interface except loopback).

    aioice offers no option for this: its `Connection.gather_candidates` calls the module
    function `aioice.ice.get_host_addresses`, which skips 127.0.0.1. We replace that function,
    so the choice is process-wide (every peer connection of this process). A loopback-only
    host (tests, a network namespace) needs ["127.0.0.1"] or no candidate exists at all.
    Raises ValueError for an entry that is not an IP address.
    """
    addresses = [ipaddress.ip_address(host) for host in hosts]  # ValueError on a bad entry
    if not addresses:
        aioice.ice.get_host_addresses = _default_get_host_addresses
        return

    def configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(a)
            for a in addresses
            if (a.version == 4 and use_ipv4) or (a.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = configured_host_addresses


def configure_ice_public_ip(address: str | None) -> None:
    """Advertise `address` in place of every gathered host candidate's address (None: as
    gathered), for an instance behind 1:1 NAT: a pod with hostNetwork on a node whose public
    IP is not on its interfaces, a cloud VM with an elastic IP (docs/deploy.md).

    Only what the SDP announces changes: the sockets stay bound to the host addresses, and
    a peer's connectivity checks sent to `address` reach them through the NAT, which must
    keep the port (1:1 NAT, or hostNetwork). Like `configure_ice_hosts`, this is process-wide:
    aiortc has no per-connection option, so `RTCIceGatherer.getLocalCandidates` is wrapped.
    Raises ValueError for an `address` that is not an IP address.
    """
    if address is None:
        RTCIceGatherer.getLocalCandidates = _default_get_local_candidates  # type: ignore[method-assign]
        return
    public = ipaddress.ip_address(str(address))  # ValueError on a bad address

    def announced_candidates(self: RTCIceGatherer) -> list[RTCIceCandidate]:
        out: list[RTCIceCandidate] = []
        seen: set[tuple[int, str, int, str]] = set()
        for candidate in _default_get_local_candidates(self):
            if (
                candidate.type == "host"
                and ipaddress.ip_address(candidate.ip).version == public.version
            ):
                candidate = dataclasses.replace(candidate, ip=str(public))
            key = (candidate.component, candidate.ip, candidate.port, candidate.protocol)
            if key not in seen:
                seen.add(key)
                out.append(candidate)
        return out

    RTCIceGatherer.getLocalCandidates = announced_candidates  # type: ignore[method-assign]


# --- overlay track ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Picture:
    """A frame waiting to be sent: (H, W, 3) uint8 RGB and its timestamp."""

    image: np.ndarray
    pts: int
    time_base: Fraction


class OverlayTrack(MediaStreamTrack):
    """Outgoing video: the latest frame with the latest masks drawn (`streamer.overlay`).

    Feed it from the event loop with `push_frame` (each new input frame) and from any thread
    with `set_objects` (each new result). `recv()` waits for a frame newer than the last one
    sent, so the track runs at the input's frame rate; masks lag by the inference time.
    Output frames keep the input frame's pts / time_base.
    """

    kind = "video"

    def __init__(self, *, style: OverlayStyle | None = None) -> None:
        super().__init__()
        self.style = style or OverlayStyle()
        self._pending: _Picture | None = None
        self._first_sent = False
        self._wakeup = asyncio.Event()
        # Replaced as a whole (one atomic attribute store) by the worker thread.
        self._objects: tuple[tuple[int, ...], np.ndarray | None] = ((), None)
        self._clock_origin: float | None = None
        self.frames_sent = 0

    def push_frame(
        self, image: np.ndarray, pts: int | None = None, time_base: Fraction | None = None
    ) -> None:
        """Offer a new input frame ((H, W, 3) uint8 RGB); call on the event loop."""
        if self.readyState != "live":
            return
        if self._pending is not None and not self._first_sent:
            return  # keep the stream's first frame: receivers count pts from it
        if pts is None or time_base is None:
            now = time.monotonic()
            if self._clock_origin is None:
                self._clock_origin = now
            pts, time_base = round((now - self._clock_origin) * 90_000), _VIDEO_TIME_BASE
        self._pending = _Picture(image=image, pts=pts, time_base=time_base)
        self._wakeup.set()

    def set_objects(self, obj_ids: Sequence[int], masks: np.ndarray) -> None:
        """Masks to draw from now on: (N, h, w) bool for `obj_ids`; safe from any thread."""
        self._objects = (tuple(int(i) for i in obj_ids), masks)

    async def recv(self) -> av.VideoFrame:
        """The next overlay frame (the latest picture with its masks); waits for one."""
        while self._pending is None:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.readyState != "live":
            raise MediaStreamError
        picture, self._pending = self._pending, None
        obj_ids, masks = self._objects
        loop = asyncio.get_running_loop()
        frame = await loop.run_in_executor(None, self._render, picture, obj_ids, masks)
        self._first_sent = True
        self.frames_sent += 1
        return frame

    def _render(
        self, picture: _Picture, obj_ids: tuple[int, ...], masks: np.ndarray | None
    ) -> av.VideoFrame:
        """Executor thread: draw and wrap as an av frame with the input's timestamp."""
        image = picture.image
        if masks is not None and obj_ids:
            image = draw_overlay(image, masks, obj_ids, style=self.style)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = picture.pts
        frame.time_base = picture.time_base
        return frame

    def stop(self) -> None:
        """End the track; a waiting `recv()` raises MediaStreamError."""
        super().stop()
        self._wakeup.set()  # a pending recv() raises MediaStreamError


# --- peer ------------------------------------------------------------------------------------
