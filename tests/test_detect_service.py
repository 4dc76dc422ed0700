"""Detector seeding through the live service: `sam2-stream serve` (subprocess, 127.0.0.1) with
`--detector detect_fixtures:colour_blobs`, driven over websockets with the micro model.

The micro model has random weights, so its masks cover the whole frame: the clip's "red"
object is the whole frame (its detection box then equals its mask's box, as a trained model's
would), and a small "green" square walks in at frame 5.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from serve_process import running_server
from service_client import AUTH, TOKEN, create, delete, recv, recv_until, run, send, ws_url
from websockets.asyncio.client import connect

FRAMES = 8
GREEN_FROM = 5
SIZE = (320, 180)  # width, height


def _frame(i: int) -> np.ndarray:
    w, h = SIZE
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = (220, 30, 30)  # red everywhere
    if i >= GREEN_FROM:
        image[90:140, 200:250] = (30, 220, 40)  # the newcomer
    return image


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_walk_in(tmp_path_factory.mktemp("detect") / "walk_in.mp4")


def write_walk_in(path: Path) -> Path:
    """FRAMES frames of `_frame` as an H.264 mp4 at 10 fps."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for i in range(FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tests = str(Path(__file__).resolve().parent)
    env = {
        "SAM2_STREAM_DETECTOR": "detect_fixtures:colour_blobs",
        "SAM2_STREAM_MAX_OBJECTS_PER_SESSION": "4",
        "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
        "PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p),
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log_path, TOKEN, env, ready_timeout=90.0) as base:
        yield base


def _labels(message: dict) -> dict[int, tuple]:
    return {o["obj_id"]: (o["label"], o["class_id"], o["det_score"]) for o in message["objects"]}


def test_detect_every_n_frames_keeps_ids_and_adds_newcomers(server, clip):
    session = create(
        server,
        source=str(clip),
        detect={"every_n_frames": GREEN_FROM, "min_score": 0.5, "iou": 0.5},
    )

    async def body():
        frames = []
        async with connect(ws_url(server, session["id"]), additional_headers=AUTH) as ws:
            await recv_until(ws, "hello")
            while len(frames) < FRAMES:
                message = await recv(ws, timeout=60)
                if message["type"] == "end":
                    break
                assert message["type"] == "frame", message
                frames.append(message)
        return frames

    frames = run(body(), timeout=300)
    assert [f["frame_idx"] for f in frames] == list(range(FRAMES))
    first = _labels(frames[0])
    assert list(first.values()) == [("red", 0, pytest.approx(0.9))]
    (red_id,) = first
    # Frames 1-4 track the red object without detecting again.
    assert all(_labels(f) == first for f in frames[1:GREEN_FROM])
    later = _labels(frames[GREEN_FROM])
    assert later[red_id][0] == "red"  # matched: it keeps its id
    newcomers = [obj_id for obj_id in later if obj_id != red_id]
    assert len(newcomers) == 1 and later[newcomers[0]][:2] == ("green", 1)
    delete(server, session["id"])


def test_detect_command_and_its_errors(server, clip):
    session = create(server, source=str(clip), max_frames=GREEN_FROM + 1)

    async def body():
        async with connect(ws_url(server, session["id"]), additional_headers=AUTH) as ws:
            await recv_until(ws, "hello")
            await recv_until(ws, "end", timeout=120)  # the last frame has the green square
            await send(ws, type="detect", id="blank", text="  . ")
            blank = await recv(ws)
            await send(ws, type="detect", id="go", classes=["green"], min_score=0.5)
            ack = await recv(ws, timeout=60)
            return blank, ack

    blank, ack = run(body(), timeout=300)
    assert blank["type"] == "error" and blank["code"] == "bad_message" and blank["id"] == "blank"
    assert ack["type"] == "ack" and ack["request"] == "detect" and len(ack["obj_ids"]) == 1
    labels = _labels(ack)
    assert labels[ack["obj_ids"][0]][:2] == ("green", 1)  # only the class asked for
    delete(server, session["id"])
