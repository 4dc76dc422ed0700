"""Issue 9's black-box probe, repeated against `sam2-stream serve` (subprocess, micro model,
127.0.0.1): one test per numbered defect (WebRTC/WHIP slots are in test_peer_lifecycle.py,
the fuzz test in test_fuzz.py). Short TTLs and timeouts keep it quick; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import MICRO_CHECKPOINT
from pycocotools import mask as mask_api
from serve_process import free_port, holds_udp_port, proc_status, reset_peak_rss, running_server
from service_client import AUTH, TOKEN, create, make_clip, run, ws_url
from waiting import poll
from websockets.asyncio.client import connect

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

MAX_SESSIONS = 4
FINISHED_TTL = 2.0
IDLE_TTL = 4.0
MAX_BODY = 64 << 10
MAX_REPLIES = 16
SOURCE_TIMEOUT = 1.0
TIMEOUT = 30.0
MiB = 1 << 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hardening") / "clip.mp4", rate=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, server pid, log path) of a server with short TTLs and small limits."""
    env = {
        "SAM2_STREAM_MAX_SESSIONS": str(MAX_SESSIONS),
        "SAM2_STREAM_FINISHED_TTL": str(FINISHED_TTL),
        "SAM2_STREAM_IDLE_TTL": str(IDLE_TTL),
        "SAM2_STREAM_MAX_BODY_BYTES": str(MAX_BODY),
        "SAM2_STREAM_MAX_PENDING_REPLIES": str(MAX_REPLIES),
        "SAM2_STREAM_SOURCE_OPEN_TIMEOUT": str(SOURCE_TIMEOUT),
        "SAM2_STREAM_SOURCE_READ_TIMEOUT": str(SOURCE_TIMEOUT),
        # tcp/udp are off by default (they can listen); the timeout test needs them.
        "SAM2_STREAM_SOURCE_SCHEMES": '["file", "webrtc", "rtsp", "tcp", "udp"]',
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    processes: list[subprocess.Popen] = []
    with running_server(log_path, TOKEN, env, ready_timeout=90.0, processes=processes) as base:
        yield base, processes[0].pid, log_path


# --- helpers ----------------------------------------------------------------------------------


def status_of(base: str, session_id: str) -> int:
    return httpx.get(f"{base}/sessions/{session_id}", headers=AUTH, timeout=10).status_code


async def reply_to(ws, request_id, timeout: float = TIMEOUT) -> dict:
    """The ack/error answering `request_id` (frames skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if message["type"] in ("ack", "error") and message.get("id") == request_id:
            return message
        assert message["type"] in ("frame", "ack", "error"), message


async def first_frame(ws) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if message["type"] == "frame":
            return message


# --- 1 and 8: masks ---------------------------------------------------------------------------


def test_oversized_and_malformed_masks_are_refused_before_decoding(server, clip):
    base, pid, _ = server

    async def body():
        session = create(base, source=str(clip), paced=True)
        async with connect(ws_url(base, session["id"]), additional_headers=AUTH) as ws:
            frame = await first_frame(ws)
            h, w = frame["height"], frame["width"]
            baseline = proc_status(pid)["VmRSS"]
            reset_peak_rss(pid)
            probes = [
                ([268435456, 4], "0", "bad_message"),  # 80 bytes that allocated 2 GiB
                ([2**31, 4], "0", "bad_message"),  # 17 GiB
                ([h * 8, w * 8], "0", "bad_message"),  # counts do not cover the size
                ([4, 4], "52203", "out_of_range"),  # valid, but not the frame's size
                *(([h, w], counts, "bad_message") for counts in ["", "0", "1", "x"]),
            ]
            for i, (size, counts, code) in enumerate(probes):
                await ws.send(
                    json.dumps(
                        {"type": "add_mask", "id": i, "mask": {"size": size, "counts": counts}}
                    )
                )
                reply = await reply_to(ws, i)
                assert (reply["type"], reply["code"]) == ("error", code), (size, counts, reply)
            peak = proc_status(pid)["VmHWM"] - baseline
            assert peak < 50 * MiB, f"peak RSS grew {peak / MiB:.1f} MiB"
            # A real mask of the frame's size still works.
            mask = np.zeros((h, w), np.uint8)
            mask[10:60, 20:90] = 1
            counts = mask_api.encode(np.asfortranarray(mask))["counts"].decode()
            await ws.send(
                json.dumps(
                    {"type": "add_mask", "id": "ok", "mask": {"size": [h, w], "counts": counts}}
                )
            )
            assert (await reply_to(ws, "ok"))["type"] == "ack"
        httpx.delete(f"{base}/sessions/{session['id']}", headers=AUTH, timeout=20)

    run(body())


# --- 2: a client that sends but never reads ---------------------------------------------------


class RawWebSocket:
    """A minimal websocket client on a raw socket with a tiny receive buffer, so that a test
    can send without ever reading (the websockets library always reads in the background)."""

    def __init__(self, base: str, path: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)
        assert b" 101 " in response.split(b"\r\n")[0], response
        self.buffer = b""

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def read_until_close(self, timeout: float) -> tuple[int, int]:
        """Read every frame until the server's close frame: (frames before it, close code);
        close code None if the connection ended without one."""
        deadline = time.monotonic() + timeout
        frames = 0
        while time.monotonic() < deadline:
            while len(self.buffer) >= 2:
                opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
                offset = 2
                if length == 126:
                    if len(self.buffer) < 4:
                        break
                    length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif length == 127:
                    if len(self.buffer) < 10:
                        break
                    length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if len(self.buffer) < offset + length:
                    break
                payload = self.buffer[offset : offset + length]
                self.buffer = self.buffer[offset + length :]
                if opcode == 0x8:
                    return frames, struct.unpack("!H", payload[:2])[0] if payload else None
                frames += 1
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return frames, None
            self.buffer += chunk
        raise AssertionError("no close frame in time")


def test_a_client_that_never_reads_is_disconnected_with_4429(server, clip):
    base, pid, _ = server
    session = create(base, source=str(clip), paced=True)
    baseline = proc_status(pid)["VmRSS"]
    client = RawWebSocket(base, f"/sessions/{session['id']}/ws")
    bad = json.dumps({"type": "t" * 2000})  # each gets an error reply (its echo is clipped)
    sent = 0
    try:
        for _ in range(3000):
            client.send_text(bad)
            sent += 1
    except OSError:  # the server closed on us: that is the point
        pass
    growth = proc_status(pid)["VmRSS"] - baseline
    frames, code = client.read_until_close(timeout=30)
    client.sock.close()
    assert code == 4429, (frames, code, sent)
    assert frames < sent  # replies were dropped, not all queued
    assert growth < 100 * MiB, f"RSS grew {growth / MiB:.1f} MiB"
    httpx.delete(f"{base}/sessions/{session['id']}", headers=AUTH, timeout=20)


# --- 3: HTTP bodies -----------------------------------------------------------------------------


def test_http_bodies_are_capped_and_422_does_not_echo(server):
    base, _, _ = server
    host, port = base.removeprefix("http://").split(":")
    # A 200 MB Content-Length: answered 413 at once, without the server reading the body.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /sessions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n{"
            ).encode()
        )
        started = time.monotonic()
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert time.monotonic() - started < 5
    # A chunked body (no length) is cut off as soon as it passes the limit.
    chunks = (b"x" * 8192 for _ in range(1000))  # 8 MB if it were all read
    response = httpx.post(f"{base}/sessions", content=chunks, headers=AUTH, timeout=20)
    assert response.status_code == 413, response.text
    # WHIP/SDP is capped too.
    response = httpx.post(
        f"{base}/whip",
        content=b"v=0\r\n" + b"a=x\r\n" * (MAX_BODY // 4),
        headers={**AUTH, "Content-Type": "application/sdp"},
        timeout=20,
    )
    assert response.status_code == 413
    # Validation errors say what is wrong without sending the input back.
    huge = "y" * (MAX_BODY // 4)
    response = httpx.post(
        f"{base}/sessions", json={"source": "x", huge: 1, "paced": huge}, headers=AUTH, timeout=20
    )
    assert response.status_code == 422
    assert len(response.content) < 2000, len(response.content)


# --- 4: slots come back ---------------------------------------------------------------------


def test_finished_and_idle_sessions_give_their_slots_back(server, clip):
    base, _, _ = server
    finished = [create(base, source=str(clip), start="now", max_frames=2) for _ in range(2)]
    idle = [create(base, source=str(clip)) for _ in range(MAX_SESSIONS - 2)]  # never connected
    response = httpx.post(f"{base}/sessions", json={"source": str(clip)}, headers=AUTH, timeout=10)
    assert response.status_code == 429  # all slots taken

    def state(session_id: str) -> dict:
        return httpx.get(f"{base}/sessions/{session_id}", headers=AUTH, timeout=10).json()

    info = poll(lambda: (i := state(finished[0]["id"]))["state"] == "finished" and i, TIMEOUT)
    info = poll(lambda: (i := state(finished[0]["id"]))["expires_in"] is not None and i, 5)
    assert 0 <= info["expires_in"] <= FINISHED_TTL
    limits = httpx.get(f"{base}/limits", headers=AUTH, timeout=10).json()
    assert (limits["finished_ttl"], limits["idle_ttl"]) == (FINISHED_TTL, IDLE_TTL)
    for session in finished + idle:
        sid = session["id"]
        poll(lambda sid=sid: status_of(base, sid) == 404, IDLE_TTL + FINISHED_TTL + 10)
    create(base, source=str(clip))  # the slots are back


def test_a_session_whose_client_vanished_is_closed_after_idle_ttl(server, clip):
    base, _, _ = server

    async def body():
        session = create(base, source=str(clip), paced=True)
        async with connect(ws_url(base, session["id"]), additional_headers=AUTH) as ws:
            await first_frame(ws)
            await asyncio.sleep(IDLE_TTL + 1.5)  # in use: the idle TTL does not apply
            response = httpx.get(f"{base}/sessions/{session['id']}", headers=AUTH, timeout=10)
            assert response.status_code == 200 and response.json()["expires_in"] is None
        poll(lambda: status_of(base, session["id"]) == 404, IDLE_TTL + 10)

    run(body())


# --- 5 and 10: what used to drop the connection or be coerced ------------------------------------


def test_json_limits_and_strict_fields_over_the_websocket(server, clip):
    base, _, _ = server

    async def body():
        session = create(base, source=str(clip), paced=True)
        async with connect(ws_url(base, session["id"]), additional_headers=AUTH) as ws:
            await first_frame(ws)
            cases = [
                '{"type": "reset", "x": ' + "9" * 4301 + "}",  # used to drop the TCP connection
                "[" * 1000 + "]" * 1000,  # idem
                '{"type": "add_box", "box": [1, 2, 30, 40], "frame_idx": -1}',
                '{"type": "add_box", "box": [1, 2, 30, 40], "obj_id": true}',
            ]
            for raw in cases:
                await ws.send(raw)
                reply = await reply_to(ws, None)
                assert (reply["type"], reply["code"]) == ("error", "bad_message"), raw[:40]
            await ws.send(json.dumps({"type": "add_box", "id": True, "box": [1, 2, 30, 40]}))
            reply = await reply_to(ws, None)  # `true` is not the id 1
            assert reply["code"] == "bad_message"
            await ws.send(json.dumps({"type": "set_options", "id": "still-open"}))
            assert (await reply_to(ws, "still-open"))["type"] == "ack"
        httpx.delete(f"{base}/sessions/{session['id']}", headers=AUTH, timeout=20)

    run(body())


# --- 6 and 9: secrets ---------------------------------------------------------------------------


def test_the_token_never_appears_in_the_logs(server, clip):
    base, _, log_path = server

    async def body():
        session = create(base, source=str(clip), paced=True)
        url = ws_url(base, session["id"]) + f"?token={TOKEN}"  # as the browser client does
        async with connect(url) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "hello"
        response = httpx.get(f"{base}/sessions?token={TOKEN}", timeout=10)
        assert response.status_code == 200

    run(body())

    def logged() -> str | None:
        text = log_path.read_text(errors="replace")
        return text if "WebSocket /sessions/" in text and "GET /sessions?" in text else None

    text = poll(logged, 10)
    assert TOKEN not in text
    assert "?<redacted>" in text or "token=***" in text


def test_empty_token_is_refused_at_start_and_bare_bearer_is_401(server, tmp_path):
    base, _, _ = server
    for header in ("Bearer", "bearer", "Bearer =="):
        response = httpx.get(f"{base}/sessions", headers={"Authorization": header}, timeout=10)
        assert response.status_code == 401
    assert httpx.get(f"{base}/sessions?token=", timeout=10).status_code == 401
    command = [
        sys.executable, "-m", "streamer.cli", "serve", "--host", "127.0.0.1",
        "--port", str(free_port()), "--model", "sam2.1_micro",
        "--checkpoint", str(MICRO_CHECKPOINT), "--device", "cpu",
    ]  # fmt: skip
    for empty in ("", "   "):
        result = subprocess.run(
            command,
            env={**os.environ, "SAM2_STREAM_AUTH_TOKEN": empty},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert result.returncode != 0
        assert "auth_token" in result.stderr + result.stdout


# --- 7: network sources -------------------------------------------------------------------------


def test_network_sources_time_out_stop_fast_and_leave_no_thread_or_socket(server, clip):
    base, pid, _ = server
    response = httpx.post(
        f"{base}/sessions", json={"source": "http://127.0.0.1:9/x.mp4"}, headers=AUTH, timeout=10
    )
    assert response.status_code == 400 and "not allowed" in response.json()["message"]

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        tcp = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        udp = f"udp://127.0.0.1:{free_port()}"
        # Warm up what the server keeps anyway (executor threads), then take the baseline.
        warm = create(base, source=udp, start="now")
        httpx.delete(f"{base}/sessions/{warm['id']}", headers=AUTH, timeout=20)
        time.sleep(SOURCE_TIMEOUT + 1)
        before = proc_status(pid)

        sessions = [create(base, source=spec, start="now") for spec in (tcp, udp)]
        for session in sessions:
            url = f"{base}/sessions/{session['id']}"
            info = poll(
                lambda url=url: (
                    (i := httpx.get(url, headers=AUTH, timeout=10).json())["state"] == "failed"
                    and i
                ),
                SOURCE_TIMEOUT + 10,
            )
            assert "no answer" in info["error"] or "no data" in info["error"], info
            httpx.delete(f"{base}/sessions/{session['id']}", headers=AUTH, timeout=20)

        # Deleting a source that is blocked in its network open takes under a second. Proof
        # that it is blocked: FFmpeg's UDP input has bound the port and waits for data (the
        # server holds a socket on it) while the source has neither delivered nor failed. It
        # gives up after SOURCE_TIMEOUT, so a busy machine may miss the moment: a few tries.
        def session_of(url: str) -> dict:
            return httpx.get(url, headers=AUTH, timeout=10).json()

        def blocked_in_open(port: int, url: str) -> bool:
            seen = session_of(url)
            return (
                seen["source_state"] == "starting"
                and seen["frames_captured"] == 0
                and holds_udp_port(pid, port)
            )

        for _ in range(5):
            port = free_port()
            session = create(base, source=f"udp://127.0.0.1:{port}", start="now")
            url = f"{base}/sessions/{session['id']}"
            poll(
                lambda port=port, url=url: (
                    holds_udp_port(pid, port) or session_of(url)["state"] == "failed"
                ),
                SOURCE_TIMEOUT + 10,
                "the source to bind its port or give up",
                step=0.02,
            )
            if blocked_in_open(port, url):
                break
            httpx.delete(url, headers=AUTH, timeout=20)
        else:
            pytest.fail("the UDP source never stayed blocked in its open long enough to look")
        started = time.monotonic()
        httpx.delete(url, headers=AUTH, timeout=20)
        assert time.monotonic() - started < 1.0
        assert httpx.get(url, headers=AUTH, timeout=10).status_code == 404

        def settled():
            now = proc_status(pid)
            ok = now["threads"] <= before["threads"] and now["sockets"] <= before["sockets"]
            return ok and now

        after = poll(settled, SOURCE_TIMEOUT + 10, step=0.25)
    numbers = {k: (before[k], after[k]) for k in ("threads", "fds", "sockets")}
    assert after["fds"] <= before["fds"] + 2, numbers
