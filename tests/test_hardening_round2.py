"""Issue 19's black-box probe (round 2) against `sam2-stream serve` (subprocess, micro model,
127.0.0.1): per-session authorization, secrets in every field and log line, hostile SDP
offers, a stalled server and its publishers. Every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
import test_webrtc as helpers
from serve_process import running_server
from service_client import make_clip
from test_webrtc import Client, ClipTrack
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SERVICE = "round2-service-token"
ADMIN = "round2-admin-token"
SERVICE_AUTH = {"Authorization": f"Bearer {SERVICE}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
SDP = {"Content-Type": "application/sdp"}
SILENCE = 2.0  # peer_silence_timeout
MAX_WEBSOCKETS = 3
TIMEOUT = 30.0
PASSWORD = "hunter2-s3cret"
MAX_FRAME_PIXELS = 400 * 300

clip_frames = helpers.clip_frames
loopback_ice = helpers.loopback_ice


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("round2") / "clip.mp4", rate=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, server pid, log path) with a service token, a separate admin token, a short
    peer silence timeout and a small websocket cap."""
    env = {
        "SAM2_STREAM_ADMIN_TOKEN": ADMIN,
        "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
        "SAM2_STREAM_PEER_SILENCE_TIMEOUT": str(SILENCE),
        "SAM2_STREAM_MAX_WEBSOCKETS_PER_SESSION": str(MAX_WEBSOCKETS),
        "SAM2_STREAM_SOURCE_OPEN_TIMEOUT": "1",
        "SAM2_STREAM_SOURCE_READ_TIMEOUT": "1",
        # Above the 320x180 clip, below the 480x360 publisher of the frame-size test.
        "SAM2_STREAM_MAX_FRAME_PIXELS": str(MAX_FRAME_PIXELS),
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    processes = []
    with running_server(log_path, SERVICE, env, ready_timeout=120.0, processes=processes) as base:
        yield base, processes[0].pid, log_path


def run(coro, timeout: float = 120.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(base: str, session_id: str) -> str:
    return base.replace("http://", "ws://") + f"/sessions/{session_id}/ws"


def create(base: str, **body) -> dict:
    response = httpx.post(f"{base}/sessions", json=body, headers=SERVICE_AUTH, timeout=20)
    assert response.status_code == 201, response.text
    return response.json()


async def recv(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def reply_to(ws, request_id) -> dict:
    while True:
        message = await recv(ws)
        if message["type"] in ("ack", "error") and message.get("id") == request_id:
            return message


async def close_code(ws) -> int:
    try:
        while True:
            await recv(ws)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006


# --- 4: authorization per session -------------------------------------------------------------


def test_the_service_token_only_creates_sessions(server, clip):
    base, _, _ = server
    mine = create(base, source=str(clip))
    assert mine["token"] and mine["viewer_token"] and mine["token"] != mine["viewer_token"]
    sid = mine["id"]
    with httpx.Client(base_url=base, timeout=20) as http:
        # A second client holding the service token cannot see, control or delete it.
        assert http.get("/sessions", headers=SERVICE_AUTH).status_code == 403
        assert http.get("/metrics", headers=SERVICE_AUTH).status_code == 403
        assert http.get(f"/sessions/{sid}", headers=SERVICE_AUTH).status_code == 403
        assert http.delete(f"/sessions/{sid}", headers=SERVICE_AUTH).status_code == 403
        assert http.post("/admin/drain", headers=SERVICE_AUTH).status_code == 403
        offer = {"sdp": "v=0", "type": "offer"}
        assert (
            http.post(f"/sessions/{sid}/webrtc/offer", json=offer, headers=SERVICE_AUTH)
        ).status_code == 403
        # Tokens never show in info or listings; the admin sees every session.
        listing = http.get("/sessions", headers=ADMIN_AUTH)
        assert listing.status_code == 200 and sid in listing.text
        assert mine["token"] not in listing.text and mine["viewer_token"] not in listing.text
        assert http.get("/metrics", headers=ADMIN_AUTH).status_code == 200
        info = http.get(f"/sessions/{sid}", headers=bearer(mine["viewer_token"]))
        assert info.status_code == 200 and info.json()["token"] is None
        # Another session's capability opens nothing here.
        other = create(base, source=str(clip))
        assert http.get(f"/sessions/{sid}", headers=bearer(other["token"])).status_code == 401
        wrong = bearer(other["viewer_token"])
        assert http.delete(f"/sessions/{sid}", headers=wrong).status_code == 401
        assert http.get(f"/sessions/{sid}", headers=SERVICE_AUTH).status_code == 403

    async def body():
        service = await close_code(
            await connect(ws_url(base, sid), additional_headers=SERVICE_AUTH)
        )
        # The viewer watches (token in a subprotocol, not the URL) but cannot prompt.
        async with connect(
            ws_url(base, sid), subprotocols=["sam2-stream", f"bearer.{mine['viewer_token']}"]
        ) as viewer:
            assert viewer.subprotocol == "sam2-stream"
            assert (await recv(viewer))["type"] == "hello"
            await viewer.send(json.dumps({"type": "reset", "id": 7}))
            refused = await reply_to(viewer, 7)
        async with connect(ws_url(base, sid), additional_headers=bearer(mine["token"])) as owner:
            assert (await recv(owner))["type"] == "hello"
            await owner.send(json.dumps({"type": "reset", "id": 8}))
            accepted = await reply_to(owner, 8)
        return service, refused, accepted

    service, refused, accepted = run(body())
    assert service == 4403
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert accepted["type"] == "ack"
    with httpx.Client(base_url=base, timeout=20) as http:
        assert (
            http.delete(f"/sessions/{sid}", headers=bearer(mine["viewer_token"])).status_code == 403
        )
        assert http.delete(f"/sessions/{sid}", headers=bearer(mine["token"])).status_code == 204
        assert http.delete(f"/sessions/{other['id']}", headers=ADMIN_AUTH).status_code == 204


def test_websockets_per_session_are_capped(server, clip):
    base, _, _ = server
    session = create(base, source=str(clip), paced=True)

    async def body():
        sockets = []
        try:
            for _ in range(MAX_WEBSOCKETS):
                ws = await connect(
                    ws_url(base, session["id"]), additional_headers=bearer(session["token"])
                )
                assert (await recv(ws))["type"] == "hello"
                sockets.append(ws)
            extra = await connect(
                ws_url(base, session["id"]), additional_headers=bearer(session["token"])
            )
            refused = await recv(extra)
            return refused, await close_code(extra)
        finally:
            for ws in sockets:
                await ws.close()

    refused, code = run(body())
    assert refused["type"] == "error" and "limit" in refused["message"] and code == 4430
    httpx.delete(f"{base}/sessions/{session['id']}", headers=ADMIN_AUTH, timeout=20)


# --- 5: secrets never leave -------------------------------------------------------------------


def test_source_passwords_appear_in_no_response_or_log(server):
    base, _, log_path = server
    with socket.create_server(("127.0.0.1", 0)) as refusing:
        port = refusing.getsockname()[1]
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/stream"
    session = create(base, source=url, start="now")
    sid = session["id"]
    with httpx.Client(base_url=base, timeout=20) as http:

        def failed_once():
            info = http.get(f"/sessions/{sid}", headers=ADMIN_AUTH).json()
            return info["error"] and info

        deadline = time.monotonic() + TIMEOUT
        while not (info := failed_once()):
            assert time.monotonic() < deadline, "the source never reported its error"
            time.sleep(0.2)

        async def hello():
            async with connect(ws_url(base, sid), additional_headers=ADMIN_AUTH) as ws:
                return await ws.recv()

        texts = {
            "create": json.dumps(session),
            "info": json.dumps(info),
            "list": http.get("/sessions", headers=ADMIN_AUTH).text,
            "metrics": http.get("/metrics", headers=ADMIN_AUTH).text,
            "hello": run(hello()),
        }
        http.delete(f"/sessions/{sid}", headers=ADMIN_AUTH)
    texts["log"] = log_path.read_text(errors="replace")
    assert "admin:***@127.0.0.1" in texts["info"] and info["error"], info
    leaks = [name for name, text in texts.items() if PASSWORD in text]
    assert leaks == [], f"the password leaked in: {leaks}"


# --- 2: hostile SDP offers and the event loop -------------------------------------------------


def hostile_offer(sections: int = 600) -> str:
    """A syntactically fine offer of up to `sections` video sections, under 64 KiB (~580 of
    them: ~1 s of aiortc parsing on the event loop each, without the caps)."""
    head = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\n"
        "a=ice-pwd:abcdefghijklmnopqrstuv\r\na=fingerprint:sha-256 "
        + ":".join(["AB"] * 32)
        + "\r\na=setup:actpass\r\n"
    )
    section = (
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\na=rtcp-mux\r\n"
        "a=rtpmap:96 VP8/90000\r\na=sendonly\r\n"
    )
    body = head
    for i in range(sections):
        more = section.format(i=i)
        if len(body) + len(more) >= 64 << 10:  # under the body cap
            break
        body += more
    return body


def test_a_burst_of_hostile_offers_keeps_healthz_quick(server):
    base, _, _ = server
    offer = hostile_offer()
    assert offer.count("m=video") > 100 and len(offer) < 64 << 10

    async def body():
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            latencies: list[float] = []
            done = asyncio.Event()

            async def probe():
                while not done.is_set():
                    started = time.perf_counter()
                    assert (await http.get("/healthz")).status_code == 200
                    latencies.append(time.perf_counter() - started)
                    await asyncio.sleep(0.02)

            prober = asyncio.create_task(probe())
            try:
                answers = await asyncio.gather(
                    *(
                        http.post("/whip", content=offer, headers={**SERVICE_AUTH, **SDP})
                        for _ in range(10)
                    )
                )
            finally:
                done.set()
                await prober
            return answers, latencies

    answers, latencies = run(body())
    assert latencies and max(latencies) < 0.5, f"/healthz took up to {max(latencies):.2f} s"
    assert [a.status_code for a in answers] == [400] * 10
    assert "at most" in answers[0].json()["message"] or "more than" in answers[0].json()["message"]


def test_an_offer_without_a_supported_codec_says_so(server):
    base, _, _ = server
    offer = hostile_offer(1).replace("VP8/90000", "AV1X/90000")
    answer = httpx.post(f"{base}/whip", content=offer, headers={**SERVICE_AUTH, **SDP}, timeout=20)
    assert answer.status_code == 400 and "no supported video codec" in answer.json()["message"]


# --- 3: a stalled server keeps its healthy publishers -----------------------------------------


def test_a_process_stall_does_not_close_a_sending_publisher(server, clip_frames):
    base, pid, _ = server

    async def body():
        client = Client(frames=None, receive_video=False, data_channel=False)
        track = ClipTrack(clip_frames)
        client.pc.addTransceiver(track, direction="sendonly")
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            response = await http.post(
                "/whip", content=await client.offer(), headers={**SERVICE_AUTH, **SDP}
            )
            assert response.status_code == 201, response.text
            await client.accept(response.text)
            sid = response.headers["x-session-id"]
            owner = bearer(response.headers["x-session-token"])

            async def captured() -> int:
                reply = await http.get(f"/sessions/{sid}", headers=owner)
                return reply.json()["frames_captured"] if reply.status_code == 200 else -1

            async def wait_for_more_than(count: int) -> int:
                deadline = time.monotonic() + TIMEOUT
                while (now := await captured()) <= count:
                    assert now >= 0, "the session is gone"
                    assert time.monotonic() < deadline, "no new frames"
                    await asyncio.sleep(0.2)
                return now

            before = await wait_for_more_than(0)
            os.kill(pid, signal.SIGSTOP)  # the whole server stalls; the publisher keeps sending
            try:
                # Stalled longer than the silence timeout: ~5 s of video sent meanwhile.
                sent, deadline = track.sent, time.monotonic() + TIMEOUT
                while track.sent < sent + int(30 * (SILENCE + 3)):
                    assert time.monotonic() < deadline, "the publisher stopped sending"
                    await asyncio.sleep(0.1)
            finally:
                os.kill(pid, signal.SIGCONT)
            after = await wait_for_more_than(before)
            # Past another silence timeout (a duration to outlast, not a synchronisation) the
            # peer and its session are still there.
            await asyncio.sleep(SILENCE + 1)
            peers = (await http.get(f"/sessions/{sid}/webrtc", headers=owner)).json()["peers"]
            still = await wait_for_more_than(after)
            await http.delete(f"/sessions/{sid}", headers=owner)
            await client.pc.close()
            return peers, still

    peers, still = run(body(), timeout=180)
    assert len(peers) == 1 and peers[0]["publishing"], peers
    assert still > 0


# --- 8: a request id that cannot be encoded ---------------------------------------------------

SURROGATE = '{"type": "reset", "id": "\\ud800"}'  # JSON text: the escape decodes to U+D800


def test_a_lone_surrogate_id_gets_an_error_and_the_websocket_stays(server, clip):
    base, _, _ = server
    session = create(base, source=str(clip), paced=True)

    async def body():
        async with connect(
            ws_url(base, session["id"]), additional_headers=bearer(session["token"])
        ) as ws:
            assert (await recv(ws))["type"] == "hello"
            await ws.send(SURROGATE)
            error = await reply_to(ws, None)
            await ws.send(json.dumps({"type": "set_options", "id": 2, "max_fps": 5}))
            return error, await reply_to(ws, 2)

    error, ack = run(body())
    assert (error["code"], error["id"]) == ("bad_message", None) and ack["type"] == "ack"
    httpx.delete(f"{base}/sessions/{session['id']}", headers=ADMIN_AUTH, timeout=20)


def test_a_lone_surrogate_id_keeps_the_data_channel(server, clip):
    base, _, _ = server
    session = create(base, source=str(clip), paced=True)

    async def next_message(client, kind):
        while True:
            message = await asyncio.wait_for(client.messages.get(), TIMEOUT)
            if message["type"] == kind:
                return message

    async def body():
        client = Client(frames=None, receive_video=True, data_channel=True)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=20) as http:
                response = await http.post(
                    f"/sessions/{session['id']}/webrtc/offer",
                    json={"sdp": await client.offer(), "type": "offer"},
                    headers=bearer(session["viewer_token"]),
                )
                assert response.status_code == 200, response.text
                await client.accept(response.json()["sdp"])
                assert (await next_message(client, "hello"))["session_id"] == session["id"]
                client.channel.send(SURROGATE)
                error = await next_message(client, "error")
                client.channel.send(json.dumps({"type": "reset", "id": 3}))
                forbidden = await next_message(client, "error")  # a viewer may not prompt
                peers = (
                    await http.get(f"/sessions/{session['id']}/webrtc", headers=ADMIN_AUTH)
                ).json()
                return error, forbidden, peers["peers"]
        finally:
            await client.pc.close()

    error, forbidden, peers = run(body())
    assert (error["code"], error["id"]) == ("bad_message", None)
    assert (forbidden["code"], forbidden["id"]) == ("forbidden", 3)
    assert len(peers) == 1 and peers[0]["data_channel"], "the peer connection stayed up"
    httpx.delete(f"{base}/sessions/{session['id']}", headers=ADMIN_AUTH, timeout=20)


# --- 1: frame-size limits on live sources -----------------------------------------------------


def test_a_publisher_of_oversized_frames_fails_its_session_with_the_reason(server):
    import numpy as np

    base, _, _ = server
    frames = [np.zeros((360, 480, 3), np.uint8)] * 4  # 172,800 px > MAX_FRAME_PIXELS

    async def body():
        client = Client(frames=None, receive_video=False, data_channel=False)
        client.pc.addTransceiver(ClipTrack(frames), direction="sendonly")
        try:
            async with httpx.AsyncClient(base_url=base, timeout=20) as http:
                response = await http.post(
                    "/whip", content=await client.offer(), headers={**SERVICE_AUTH, **SDP}
                )
                assert response.status_code == 201, response.text
                await client.accept(response.text)
                sid = response.headers["x-session-id"]
                async with connect(
                    ws_url(base, sid), additional_headers=bearer(response.headers["x-viewer-token"])
                ) as ws:
                    while (message := await recv(ws))["type"] != "end":
                        assert message["type"] in ("hello", "frame"), message
                    return message
        finally:
            await client.pc.close()

    end = run(body())
    assert end["state"] == "failed" and "480x360" in end["error"], end
    assert "max_frame_pixels" in end["error"]


def test_media_bombs_are_refused_at_creation_within_a_small_memory_budget(server, tmp_path):
    from media_bombs import write_bilevel_png, write_h264
    from serve_process import proc_status, reset_peak_rss

    base, pid, _ = server
    bombs = [
        write_h264(tmp_path / "8192.mp4", 8192, 8192),
        write_bilevel_png(tmp_path / "16000.png", 16000, 16000),
    ]
    baseline = proc_status(pid)["VmRSS"]
    reset_peak_rss(pid)
    answers = [
        httpx.post(f"{base}/sessions", json={"source": str(b)}, headers=SERVICE_AUTH, timeout=60)
        for b in bombs
    ]
    grown = proc_status(pid)["VmHWM"] - baseline
    assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
    assert "8192x8192" in answers[0].json()["message"]
    assert "max_frame_pixels" in answers[1].json()["message"]
    assert grown < 400 << 20, f"peak RSS grew {grown >> 20} MiB"
