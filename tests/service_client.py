"""Talking to a `sam2-stream serve` under test: bounded HTTP / websocket helpers and a clip.

Shared by the tests that start a real server (tests/serve_process.py starts it with `TOKEN`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from conftest import DATA

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIP_FRAMES = 30
CLIP_SIZE = (320, 180)  # width, height
RECV_TIMEOUT = 30.0  # one frame of the micro model takes 0.1-0.8 s on 2 busy cores


def make_clip(path: Path, rate: int) -> Path:
    """The first 30 frames of bedroom.mp4 at 320x180, re-timed to `rate` fps."""
    import av
    import cv2

    with av.open(str(DATA / "bedroom.mp4")) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = *CLIP_SIZE, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == CLIP_FRAMES:
                break
            image = cv2.resize(frame.to_ndarray(format="rgb24"), CLIP_SIZE, cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def run(coro, timeout: float = 100.0):
    """Run an async test body with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(base: str, session_id: str) -> str:
    return base.replace("http://", "ws://") + f"/sessions/{session_id}/ws"


def create(base: str, **body) -> dict:
    response = httpx.post(f"{base}/sessions", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def delete(base: str, session_id: str) -> None:
    httpx.delete(f"{base}/sessions/{session_id}", headers=AUTH, timeout=20)


def info(base: str, session_id: str) -> dict:
    response = httpx.get(f"{base}/sessions/{session_id}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


async def recv(ws, timeout: float = RECV_TIMEOUT) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, kind: str, timeout: float = RECV_TIMEOUT, skip=("frame",)) -> dict:
    """Next message of type `kind`, skipping frame messages (anything else is unexpected)."""
    while True:
        message = await recv(ws, timeout)
        if message["type"] == kind:
            return message
        assert message["type"] in skip, message


async def send(ws, **message) -> None:
    await ws.send(json.dumps({"v": 1, **message}))
