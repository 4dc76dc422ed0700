"""Publishing an aiortc video track into a session over WHIP (RFC 9725)."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import httpx

from streamer.client.errors import ClientError


class Requester(Protocol):
    """The client's HTTP call with the session's credential (`AsyncClient.request`)."""

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request; raises the typed `ClientError` of an error answer."""
        ...


class WhipPublisher:
    """One aiortc peer connection sending `track` to `/sessions/{id}/whip`."""

    def __init__(self, client: Requester, session_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self.location: str | None = None
        self.pc: Any = None

    async def start(self, track: Any) -> None:
        """Offer `track` to the session's WHIP endpoint and apply the answer; raises the
        typed `ClientError` of a refusal (the peer is closed then)."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = RTCPeerConnection()
        self.pc.addTransceiver(track, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers candidates
        try:
            response = await self.client.request(
                "POST",
                f"/sessions/{self.session_id}/whip",
                content=self.pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            )
        except ClientError:
            await self.pc.close()
            raise
        self.location = response.headers.get("location")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))

    async def close(self) -> None:
        """DELETE the WHIP resource (errors ignored) and close the peer connection."""
        if self.location is not None:
            with contextlib.suppress(ClientError):
                await self.client.request("DELETE", self.location)
            self.location = None
        if self.pc is not None:
            await self.pc.close()
