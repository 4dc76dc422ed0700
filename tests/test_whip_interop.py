"""WHIP publishers nobody on this project wrote, against `sam2-stream serve` on 127.0.0.1:

- GStreamer's `webrtcbin` (Debian's, run by tests/gst_whip_publisher.py) with its default RSA
  DTLS certificate: needs the ECDHE-RSA suites of `streamer.webrtc.dtls`.
- FFmpeg's `whip` muxer (PyAV's `format="whip"`) with an ECDSA P-256 certificate; with its
  default certificate (P-224 in PyAV's GnuTLS build, which OpenSSL 3.5+ refuses in DTLS 1.2)
  the handshake fails, and the failure must be visible: WARNING log, /metrics, session info.
- A WHIP client that gets its `201 Created` and never connects is reported the same way.

Each publisher gets masklets back on a websocket, and the reply to a click. Every wait is
bounded; publishers are subprocesses or threads this module starts and stops.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import re
import subprocess
import threading
import time

import av
import httpx
import pytest
import test_webrtc
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import SRTP_PROFILES
from certificates import self_signed
from conftest import DATA
from gst_whip_publisher import SCRIPT, SYSTEM_PYTHON, unavailable_reason
from OpenSSL import SSL
from serve_process import running_server
from test_webrtc import TIMEOUT, run
from waiting import poll_async
from websockets.asyncio.client import connect

from streamer.webrtc.dtls import CIPHER_LIST, InteropCertificate, configure_dtls

TOKEN = "whip-interop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONNECT_TIMEOUT_S = 8  # the server's connect_timeout here: a loaded machine still connects
loopback_ice = test_webrtc.loopback_ice  # this process's aiortc peers gather on 127.0.0.1
CLICK = {"type": "add_points", "id": 7, "points": [[160, 100]], "labels": [1]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
        "SAM2_STREAM_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S),
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log_path, TOKEN, env, ready_timeout=120.0) as base:
        yield base, log_path


def ws_url(base: str, session_id: str) -> str:
    return base.replace("http://", "ws://") + f"/sessions/{session_id}/ws"


async def masklets_and_click(base: str, session_id: str) -> tuple[dict, list[dict]]:
    """Watch a session on its websocket: click once a frame came, and return the click's
    reply and the first three frames that carry masklets (bounded)."""
    async with connect(ws_url(base, session_id), additional_headers=AUTH) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert hello["type"] == "hello"
        reply, tracked = None, []
        deadline = time.monotonic() + 3 * TIMEOUT
        clicked = False
        while reply is None or len(tracked) < 3:
            assert time.monotonic() < deadline, f"reply {reply}, {len(tracked)} tracked frames"
            message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert message["type"] in ("frame", "ack"), message
            if message["type"] == "ack":
                reply = message
            elif not clicked:
                await ws.send(json.dumps(CLICK))
                clicked = True
            elif message["objects"]:
                tracked.append(message)
        return reply, tracked


def check_reply_and_masklets(reply: dict, tracked: list[dict]) -> None:
    assert reply["id"] == CLICK["id"] and reply["request"] == "add_points"
    [obj] = reply["objects"]
    assert obj["obj_id"] == reply["obj_id"] and obj["area"] > 0
    for frame in tracked:
        assert [o["obj_id"] for o in frame["objects"]] == [reply["obj_id"]]
        assert frame["width"] == 320 and frame["height"] == 180


# --- the DTLS configuration itself ------------------------------------------------------------


def test_peer_connections_get_the_interop_certificate():
    """The aiortc internals streamer.webrtc.dtls relies on are still there."""

    async def body():
        configure_dtls()
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        certificate = InteropCertificate.of(pc)
        ciphers = []
        if certificate is not None:
            context = certificate._create_ssl_context(srtp_profiles=SRTP_PROFILES)
            ciphers = SSL.Connection(context).get_cipher_list()
        await pc.close()
        return certificate, ciphers

    certificate, ciphers = run(body())
    assert isinstance(certificate, InteropCertificate)
    # (TLS 1.3 suites are listed too, though DTLS 1.2 never uses them)
    assert [c for c in ciphers if not c.startswith("TLS_")] == CIPHER_LIST.decode().split(":")
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers and "ECDHE-RSA-AES128-GCM-SHA256" in ciphers


# --- GStreamer webrtcbin ----------------------------------------------------------------------


def test_gstreamer_webrtcbin_publisher_gets_masklets(server):
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"GStreamer WebRTC: {reason}")
    base, _ = server
    command = [
        SYSTEM_PYTHON, str(SCRIPT), str(DATA / "bedroom.mp4"), f"{base}/whip",
        "--token", TOKEN, "--seconds", "120", "--ice-host", "127.0.0.1",
    ]  # fmt: skip
    publisher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = publisher.stdout.readline()  # bounded by the script's own connect timeout
        assert line.startswith("SESSION "), (line, publisher.stderr.read())
        session_id = line.split()[1]
        reply, tracked = run(masklets_and_click(base, session_id))
    finally:
        publisher.terminate()
        publisher.wait(timeout=20)
    check_reply_and_masklets(reply, tracked)


# --- FFmpeg's whip muxer (PyAV) ---------------------------------------------------------------


class FFmpegPublisher(threading.Thread):
    """PyAV's `whip` muxer sending bedroom.mp4 (H.264, 320x180, 15 fps, looped) to `url`
    until `stop()`; `error` holds what it raised (the handshake happens at the first packet)."""

    def __init__(self, url: str, **options: str) -> None:
        super().__init__(daemon=True)
        self.url, self.options = url, {"authorization": TOKEN, "handshake_timeout": "15000"}
        self.options.update(options)
        self.stopping = threading.Event()
        self.error: Exception | None = None
        self.sent = 0

    def run(self) -> None:
        try:
            self._publish()
        except Exception as exc:  # reported to the test through `error`
            self.error = exc

    def _publish(self) -> None:
        with av.open(str(DATA / "bedroom.mp4")) as source:
            frames = [f.reformat(320, 180, "yuv420p") for f in source.decode(video=0)]
        output = av.open(self.url, mode="w", format="whip", options=self.options)
        try:
            stream = output.add_stream("libx264", rate=15)
            stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "15", "bf": "0"}
            start = time.monotonic()
            while not self.stopping.is_set() and self.sent < 15 * 300:  # bounded: 5 min
                frame = frames[self.sent % len(frames)]
                frame.pts, frame.time_base = self.sent, fractions.Fraction(1, 15)
                for packet in stream.encode(frame):
                    output.mux(packet)
                self.sent += 1
                self.stopping.wait(max(0.0, start + self.sent / 15 - time.monotonic()))
        finally:
            output.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def create_session(base: str) -> str:
    response = httpx.post(f"{base}/sessions", json={"source": "webrtc"}, headers=AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_ffmpeg_whip_publisher_gets_masklets(server, tmp_path):
    if "whip" not in av.formats_available:
        pytest.skip(f"PyAV {av.__version__}'s FFmpeg has no whip muxer")
    base, _ = server
    session_id = create_session(base)  # its id is known before FFmpeg publishes
    cert_file, key_file = self_signed(tmp_path)
    publisher = FFmpegPublisher(
        f"{base}/sessions/{session_id}/whip", cert_file=str(cert_file), key_file=str(key_file)
    )
    publisher.start()
    try:
        reply, tracked = run(masklets_and_click(base, session_id))
    finally:
        publisher.stop()
    assert publisher.error is None, publisher.error
    check_reply_and_masklets(reply, tracked)


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics", headers=AUTH, timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{wanted}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in /metrics"
    return float(match.group(1))


def test_ffmpeg_default_certificate_failure_is_reported(server):
    if "whip" not in av.formats_available:
        pytest.skip(f"PyAV {av.__version__}'s FFmpeg has no whip muxer")
    base, log_path = server
    before = metric(base, "sam2_stream_webrtc_peer_failures_total", role="whip", stage="dtls")
    session_id = create_session(base)
    publisher = FFmpegPublisher(f"{base}/sessions/{session_id}/whip")
    publisher.start()
    publisher.join(timeout=60)
    assert not publisher.is_alive(), "FFmpeg's handshake did not end"
    if publisher.error is None:
        pytest.skip("this FFmpeg's default DTLS certificate is accepted: nothing to report")

    async def failures():
        async with httpx.AsyncClient(timeout=10) as http:
            info = (await http.get(f"{base}/sessions/{session_id}", headers=AUTH)).json()
            return info["peer_failures"]

    [failure] = run(poll_async(failures, TIMEOUT, "the DTLS failure in the session info"))
    assert failure["role"] == "whip" and failure["stage"] == "dtls"
    assert "DTLS handshake failed" in failure["reason"], failure
    assert "the peer's certificate key is" in failure["reason"], failure  # e.g. ECDSA secp224r1
    after = metric(base, "sam2_stream_webrtc_peer_failures_total", role="whip", stage="dtls")
    assert after == before + 1
    logged = [
        line
        for line in log_path.read_text().splitlines()
        if line.startswith("WARNING") and failure["peer_id"] in line
    ]
    assert logged and "DTLS handshake failed" in logged[0], logged


# --- a client that never completes ------------------------------------------------------------


def test_whip_client_that_never_connects_is_reported(server, loopback_ice):
    """A publisher that posts its offer and goes away: its POST /whip session ends failed,
    with the reason in the session info and in /metrics, rather than as a silent 201."""
    base, _ = server
    before = sum(
        metric(base, "sam2_stream_webrtc_peer_failures_total", role="whip", stage=stage)
        for stage in ("ice", "timeout")
    )

    async def body():
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        await pc.close()  # nobody is left to answer the server's connectivity checks
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(
                f"{base}/whip",
                content=offer,
                headers={**AUTH, "Content-Type": "application/sdp"},
            )
            assert response.status_code == 201, response.text
            session_id = response.headers["x-session-id"]

            async def failed():
                info = (await http.get(f"{base}/sessions/{session_id}", headers=AUTH)).json()
                return info if info.get("state") == "failed" else None

            return await poll_async(
                failed, CONNECT_TIMEOUT_S + TIMEOUT, "the WHIP session to end failed"
            )

    info = run(body())
    [failure] = info["peer_failures"]
    assert failure["stage"] in ("ice", "timeout"), failure
    assert info["error"].startswith("WHIP publisher") and failure["reason"] in info["error"]
    after = sum(
        metric(base, "sam2_stream_webrtc_peer_failures_total", role="whip", stage=stage)
        for stage in ("ice", "timeout")
    )
    assert after == before + 1
