"""WebRTC/WHIP slots (issue 9, item 4) with real aiortc peers against `sam2-stream serve` on
127.0.0.1: invalid SDP is refused before anything is created, peers that never connect are
closed after `connect_timeout`, and a publisher whose video stops is noticed in seconds.

Reuses test_webrtc's clip and client helpers; its own server with short timeouts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import test_webrtc as helpers
from aiortc import RTCPeerConnection
from serve_process import running_server
from test_webrtc import AUTH, TOKEN, Client, ClipTrack, create_session, run
from waiting import poll_async

clip_frames = helpers.clip_frames
loopback_ice = helpers.loopback_ice

CONNECT_TIMEOUT = 3.0
SILENCE = 2.0
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
        "SAM2_STREAM_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "SAM2_STREAM_PEER_SILENCE_TIMEOUT": str(SILENCE),
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log_path, TOKEN, env, ready_timeout=120.0) as base:
        yield base


async def session_count(http: httpx.AsyncClient, base: str) -> int:
    return len((await http.get(f"{base}/sessions", headers=AUTH)).json()["sessions"])


def test_invalid_sdp_gets_400_and_creates_nothing(server):
    async def body():
        empty = RTCPeerConnection()  # no transceiver, no data channel: an SDP without media
        await empty.setLocalDescription(await empty.createOffer())
        no_media = empty.localDescription.sdp
        channel_only = Client(frames=None, receive_video=False)  # WHIP needs video
        async with httpx.AsyncClient(timeout=20) as http:
            before = await session_count(http, server)
            for offer in ("garbage", "", no_media, await channel_only.offer()):
                response = await http.post(f"{server}/whip", content=offer, headers={**AUTH, **SDP})
                assert response.status_code == 400, (offer[:30], response.text)
            session = create_session(server, source="webrtc")
            for offer in ("garbage", no_media):
                response = await http.post(
                    f"{server}/sessions/{session['id']}/webrtc/offer",
                    json={"sdp": offer, "type": "offer"},
                    headers=AUTH,
                )
                assert response.status_code == 400, response.text
            assert await session_count(http, server) == before + 1
            await http.delete(f"{server}/sessions/{session['id']}", headers=AUTH)
        await empty.close()
        await channel_only.close()

    run(body())


def test_peers_that_never_connect_are_closed_after_connect_timeout(server, clip_frames):
    async def body():
        session = create_session(server, source="webrtc")
        peers_url = f"{server}/sessions/{session['id']}/webrtc"
        clients = [Client(frames=None) for _ in range(3)]
        async with httpx.AsyncClient(timeout=20) as http:
            for client in clients:  # offered and answered, but the answer is never applied
                response = await http.post(
                    f"{peers_url}/offer",
                    json={"sdp": await client.offer(), "type": "offer"},
                    headers=AUTH,
                )
                assert response.status_code == 200, response.text
            publisher = Client(frames=None, receive_video=False, data_channel=False)
            publisher.pc.addTransceiver(ClipTrack(clip_frames), direction="sendonly")
            response = await http.post(
                f"{server}/whip", content=await publisher.offer(), headers={**AUTH, **SDP}
            )
            assert response.status_code == 201
            whip_session = response.headers["x-session-id"]
            started = time.monotonic()
            assert len((await http.get(peers_url, headers=AUTH)).json()["peers"]) == 3

            async def peers_gone() -> bool:
                return not (await http.get(peers_url, headers=AUTH)).json()["peers"]

            async def whip_session_gone() -> bool:
                url = f"{server}/sessions/{whip_session}"
                return (await http.get(url, headers=AUTH)).status_code == 404

            await poll_async(peers_gone, CONNECT_TIMEOUT + 10)
            await poll_async(whip_session_gone, CONNECT_TIMEOUT + 10)
            assert time.monotonic() - started >= CONNECT_TIMEOUT - 1.0  # not before the timeout
            await http.delete(f"{server}/sessions/{session['id']}", headers=AUTH)
        for client in [*clients, publisher]:
            await client.close()

    run(body())


class StallingTrack(ClipTrack):
    """Sends `count` frames, then never another one (a client that froze or vanished without
    closing its peer connection)."""

    def __init__(self, frames, count: int) -> None:
        super().__init__(frames)
        self.count = count
        self.stalled = asyncio.Event()

    async def recv(self):
        if self.sent >= self.count:
            self.stalled.set()
            await asyncio.Event().wait()  # forever
        return await super().recv()


def test_a_publisher_whose_video_stops_is_noticed_within_seconds(server, clip_frames):
    async def body():
        publisher = Client(frames=None, receive_video=False, data_channel=False)
        track = StallingTrack(clip_frames, count=30)
        publisher.pc.addTransceiver(track, direction="sendonly")
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(
                f"{server}/whip", content=await publisher.offer(), headers={**AUTH, **SDP}
            )
            assert response.status_code == 201, response.text
            await publisher.accept(response.text)
            session_url = f"{server}/sessions/{response.headers['x-session-id']}"

            async def frames_arrived() -> bool:
                return (await http.get(session_url, headers=AUTH)).json()["frames_captured"] > 0

            await poll_async(frames_arrived, 30)
            await asyncio.wait_for(track.stalled.wait(), 30)
            stalled_at = time.monotonic()

            async def gone() -> bool:
                return (await http.get(session_url, headers=AUTH)).status_code == 404

            await poll_async(gone, SILENCE + 10)
            noticed = time.monotonic() - stalled_at
            assert noticed < SILENCE + 5, noticed  # far below the 30 s of ICE consent expiry
        await publisher.close()

    run(body())


# A viewer in another process (a real peer that can vanish: SIGKILL sends nothing).
VIEWER = textwrap.dedent(
    """
    import asyncio, sys, httpx
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from streamer.webrtc.media import configure_ice_hosts

    async def main(base, session_id, token):
        configure_ice_hosts(["127.0.0.1"])
        pc = RTCPeerConnection()
        pc.createDataChannel("masklets")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(
                f"{base}/sessions/{session_id}/webrtc/offer",
                json={"sdp": pc.localDescription.sdp, "type": "offer"},
                headers={"Authorization": f"Bearer {token}"},
            )
        await pc.setRemoteDescription(RTCSessionDescription(**{
            k: response.json()[k] for k in ("sdp", "type")}))
        print("answered", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main(*sys.argv[1:]))
    """
)


def test_a_viewer_that_vanishes_is_noticed_within_seconds(server, tmp_path):
    async def body():
        session = create_session(server, source="webrtc")
        peers_url = f"{server}/sessions/{session['id']}/webrtc"
        root = Path(__file__).resolve().parents[1]
        viewer = subprocess.Popen(
            [sys.executable, "-c", VIEWER, server, session["id"], TOKEN],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(timeout=20) as http:

                async def connected() -> bool:
                    peers = (await http.get(peers_url, headers=AUTH)).json()["peers"]
                    return bool(peers) and peers[0]["connection_state"] == "connected"

                await poll_async(connected, 60)
                viewer.send_signal(signal.SIGKILL)  # no BYE, no DTLS close: it just vanishes
                viewer.wait(timeout=10)
                vanished_at = time.monotonic()

                async def peer_gone() -> bool:
                    return not (await http.get(peers_url, headers=AUTH)).json()["peers"]

                await poll_async(peer_gone, 25)
                noticed = time.monotonic() - vanished_at
                assert noticed < SILENCE + 6, noticed  # ICE consent alone took about 30 s
                await http.delete(f"{server}/sessions/{session['id']}", headers=AUTH)
        finally:
            if viewer.poll() is None:
                viewer.kill()
                viewer.wait(timeout=10)

    run(body())
