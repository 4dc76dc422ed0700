"""Fuzz the websocket protocol (issue 9): over 1,000 generated malformed and hostile messages,
one at a time, over a real websocket to `sam2-stream serve` (subprocess, micro model,
127.0.0.1) while the session tracks a live (paced) clip.

Asserts that every message gets a typed `error` or an `ack`, that the connection never closes
(and so never without a close code), that the server's RSS grows by less than 100 MiB, and
that the session still tracks a new object at the end. Hypothesis generates the messages
(derandomized: the same ones every run); every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
from conftest import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_api
from serve_process import proc_status, running_server
from websockets.sync.client import connect

from streamer.protocol import CLIENT_TYPES, ErrorCode

# pycocotools' decode trips numpy 2's `__array__(copy=...)` deprecation on every call.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

TOKEN = "fuzz-token-77"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_MESSAGE_BYTES = 64 << 10
MAX_OBJECTS = 3
SIZE = (160, 96)  # width, height of the clip
BATCH = 10
EXAMPLES = 205  # x BATCH messages
REPLY_TIMEOUT = 30.0
MiB = 1 << 20
ERROR_CODES = {code.value for code in ErrorCode}


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """bedroom.mp4's first 30 frames at 160x96, played back and forth for 120 s at 6 fps."""
    path = tmp_path_factory.mktemp("fuzz") / "long.mp4"
    frames = []
    with av.open(str(DATA / "bedroom.mp4")) as src:
        for frame in src.decode(video=0):
            frames.append(cv2.resize(frame.to_ndarray(format="rgb24"), SIZE, cv2.INTER_AREA))
            if len(frames) == 30:
                break
    loop = frames + frames[-2:0:-1]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=6)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for i in range(720):
            image = av.VideoFrame.from_ndarray(loop[i % len(loop)], format="rgb24")
            for packet in stream.encode(image):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "SAM2_STREAM_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "SAM2_STREAM_MAX_OBJECTS_PER_SESSION": str(MAX_OBJECTS),
        "SAM2_STREAM_AUTO_SEED_POINTS_PER_SIDE": "4",  # a generated auto_seed stays quick
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    processes: list[subprocess.Popen] = []
    with running_server(log_path, TOKEN, env, ready_timeout=90.0, processes=processes) as base:
        yield base, processes[0].pid


# --- message strategies -----------------------------------------------------------------------

W, H = SIZE
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
coord = st.one_of(st.floats(min_value=-10, max_value=W + 10), st.integers(-5, W + 5), json_leaf)
point = st.one_of(st.tuples(coord, coord).map(list), json_value)
counts = st.one_of(
    st.sampled_from(["", "0", "1", "x", "o", "52203", "\x00", f"{W * H}", "0" * 50]),
    st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=111), max_size=40),
    st.text(max_size=20),
)
size = st.one_of(
    st.sampled_from([[H, W], [4, 4], [268435456, 4], [2**31, 4], [0, 0], [-1, W], [H, W, 1]]),
    st.lists(st.integers(-(2**40), 2**40), max_size=3),
    json_value,
)
fields = {
    "id": st.one_of(st.integers(), st.text(max_size=200), st.booleans(), json_value),
    "v": st.one_of(st.just(1), json_leaf),
    "obj_id": st.one_of(st.integers(-3, 6), json_leaf),
    "frame_idx": st.one_of(st.integers(-5, 10**6), json_leaf),
    "points": st.one_of(st.lists(point, max_size=70), json_value),
    "labels": st.one_of(
        st.lists(st.one_of(st.integers(-1, 2), json_leaf), max_size=70), json_value
    ),
    "box": st.one_of(st.lists(coord, min_size=3, max_size=5), json_value),
    "mask": st.one_of(st.fixed_dictionaries({"size": size, "counts": counts}), json_value),
    "max_fps": st.one_of(st.floats(), json_leaf),
    "mask_downscale": st.one_of(st.integers(-2, 20), json_leaf),
    "obj_ids": st.one_of(st.lists(st.integers(-2, 5), max_size=5), json_value),
    "clear_old_points": json_leaf,
}
message_type = st.one_of(st.sampled_from(CLIENT_TYPES), json_leaf, st.text(max_size=30))
structured = st.builds(
    lambda kind, extra: json.dumps({"type": kind, **extra}, allow_nan=True),
    message_type,
    st.fixed_dictionaries({}, optional=fields),
)
nasty = st.one_of(
    st.integers(2, 3000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    st.integers(2, 3000).map(lambda n: '{"type": "add_points", "points": ' + "[" * n),
    st.integers(4000, 6000).map(lambda n: '{"type": "reset", "id": ' + "9" * n + "}"),
    st.integers(1, 40).map(lambda n: json.dumps({"type": "x" * (n * 1000)})),  # echoed type
    st.integers(1, 3).map(lambda n: "a" * (MAX_MESSAGE_BYTES + n)),  # message_too_large
    st.sampled_from(["", "null", "[]", '"add_box"', "1e999", "NaN", '{"type": null}', "{"]),
)
raw = st.one_of(st.text(max_size=60), st.binary(max_size=60), json_value.map(json.dumps))


def _rectangle_rle(x0: int, y0: int, x1: int, y1: int) -> str:
    mask = np.zeros((H, W), np.uint8)
    mask[min(y0, y1) : max(y0, y1) + 1, min(x0, x1) : max(x0, x1) + 1] = 1
    return mask_api.encode(np.asfortranarray(mask))["counts"].decode()


# Well-formed prompts with values near the edges: these reach the worker (acks, and the
# out_of_range / unknown_object / too_many_objects / not_ready errors).
x, y = st.floats(-3, W + 3), st.floats(-3, H + 3)
small_id = st.one_of(st.none(), st.integers(0, 6))
recent = st.one_of(st.none(), st.integers(0, 2000))
near_valid = st.one_of(
    st.builds(
        lambda pts, obj, clear, idx: {"type": "add_points", "points": pts, "obj_id": obj,
                                      "labels": [1] * len(pts), "clear_old_points": clear,
                                      "frame_idx": idx},
        st.lists(st.tuples(x, y).map(list), min_size=1, max_size=3), small_id, st.booleans(),
        recent,
    ),
    st.builds(
        lambda box, obj, idx: {"type": "add_box", "box": box, "obj_id": obj, "frame_idx": idx},
        st.tuples(x, y, x, y).map(list), small_id, recent,
    ),
    st.builds(
        lambda rect, obj: {"type": "add_mask", "obj_id": obj,
                           "mask": {"size": [H, W], "counts": _rectangle_rle(*rect)}},
        st.tuples(st.integers(0, W - 1), st.integers(0, H - 1), st.integers(0, W - 1),
                  st.integers(0, H - 1)),
        small_id,
    ),
    st.builds(lambda obj: {"type": "remove_object", "obj_id": obj}, st.integers(0, 6)),
    st.builds(
        lambda ids, fps, down: {"type": "set_options", "obj_ids": ids, "max_fps": fps,
                                "mask_downscale": down},
        st.one_of(st.none(), st.lists(st.integers(0, 6), max_size=3)),
        st.one_of(st.none(), st.floats(0.5, 100)), st.one_of(st.none(), st.integers(1, 16)),
    ),
    st.just({"type": "reset"}),
).map(json.dumps)  # fmt: skip
message = st.one_of(structured, structured, nasty, raw, near_valid)


# --- the test ---------------------------------------------------------------------------------


def _reply(ws, timeout: float = REPLY_TIMEOUT) -> dict:
    """The next ack/error (frames are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        text = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        reply = json.loads(text)
        if reply["type"] in ("ack", "error"):
            return reply
        assert reply["type"] == "frame", reply


def test_fuzzed_messages_get_typed_replies_and_the_session_survives(server, long_clip):
    base, pid = server
    response = httpx.post(
        f"{base}/sessions", json={"source": str(long_clip), "paced": True}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    session_id = response.json()["id"]
    url = base.replace("http://", "ws://") + f"/sessions/{session_id}/ws"
    counts = {"messages": 0, "acks": 0, "errors": {}}
    with connect(url, additional_headers=AUTH, max_size=None, open_timeout=20) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "hello"
        while json.loads(ws.recv(timeout=REPLY_TIMEOUT))["type"] != "frame":
            pass
        rss_before = proc_status(pid)["VmRSS"]

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(message, min_size=BATCH, max_size=BATCH))
        def one_batch(batch: list[str | bytes]) -> None:
            for item in batch:
                ws.send(item)  # str: a text frame, bytes: a binary frame
                reply = _reply(ws)  # one at a time: this reply answers this message
                counts["messages"] += 1
                if reply["type"] == "ack":
                    counts["acks"] += 1
                else:
                    assert reply["code"] in ERROR_CODES, reply
                    assert len(reply["message"].encode()) < 1000, reply["message"][:200]
                    errors = counts["errors"]
                    errors[reply["code"]] = errors.get(reply["code"], 0) + 1

        started = time.monotonic()
        one_batch()
        fuzz_seconds = time.monotonic() - started
        rss_after = proc_status(pid)["VmRSS"]

        # The session still tracks: clear this connection's filters, start over, add a box.
        ws.send(json.dumps({"type": "set_options", "id": "o", "all_objects": True,
                            "unlimited_fps": True, "mask_downscale": 1}))  # fmt: skip
        assert _reply(ws)["type"] == "ack"
        ws.send(json.dumps({"type": "reset", "id": "r"}))
        assert _reply(ws)["type"] == "ack"
        while json.loads(ws.recv(timeout=REPLY_TIMEOUT))["type"] != "frame":
            pass
        ws.send(json.dumps({"type": "add_box", "id": "b", "box": [40, 20, 120, 80]}))
        ack = _reply(ws)
        assert ack["type"] == "ack" and ack["obj_id"] is not None, ack
        tracked = 0
        deadline = time.monotonic() + REPLY_TIMEOUT
        while tracked < 2 and time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=REPLY_TIMEOUT))
            if frame["type"] == "frame" and any(
                o["obj_id"] == ack["obj_id"] for o in frame["objects"]
            ):
                tracked += 1
        assert tracked == 2
    httpx.delete(f"{base}/sessions/{session_id}", headers=AUTH, timeout=20)

    assert counts["messages"] >= 2000, counts
    assert counts["acks"] >= 50, counts  # and many reach the worker
    assert len(counts["errors"]) >= 4, counts  # the fuzz reaches several kinds of error
    growth = rss_after - rss_before
    assert growth < 100 * MiB, f"RSS grew {growth / MiB:.1f} MiB over {counts}"
    assert fuzz_seconds < 120, fuzz_seconds
