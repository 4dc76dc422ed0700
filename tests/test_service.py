"""The live service end to end: `sam2-stream serve` in a subprocess on 127.0.0.1, driven over
HTTP (httpx) and websockets with the micro model on CPU.

One server for the module (token auth on, small limits). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from coco_rle import decode_rle
from prometheus_client.parser import text_string_to_metric_families
from serve_process import running_server
from service_client import (
    AUTH,
    CLIP_FRAMES,
    CLIP_SIZE,
    TOKEN,
    create,
    delete,
    info,
    make_clip,
    recv,
    recv_until,
    run,
    send,
    ws_url,
)
from waiting import poll
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

MAX_SESSIONS = 4
MAX_OBJECTS = 2
MAX_MESSAGE_BYTES = 4096


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("service") / "bedroom_15fps.mp4", rate=15)


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory) -> Path:
    """Played at 600 fps (30 frames in 50 ms): far faster than the micro model tracks on any
    CPU (at 60 fps a quiet machine kept up with it and dropped nothing)."""
    return make_clip(tmp_path_factory.mktemp("service") / "bedroom_600fps.mp4", rate=600)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL of a running `sam2-stream serve` (subprocess, loopback, bounded start)."""
    env = {
        "SAM2_STREAM_MAX_SESSIONS": str(MAX_SESSIONS),
        "SAM2_STREAM_MAX_OBJECTS_PER_SESSION": str(MAX_OBJECTS),
        "SAM2_STREAM_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
        "SAM2_STREAM_AUTO_SEED_POINTS_PER_SIDE": "8",  # a quicker mask generator
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log_path, TOKEN, env, ready_timeout=90.0) as base:
        yield base


# --- helpers ----------------------------------------------------------------------------------


# --- tests ------------------------------------------------------------------------------------


def test_track_clip_with_a_prompt_mid_stream(server, clip):
    session = create(server, source=str(clip))
    assert session["state"] == "waiting" and session["back_pressure"] == "every_frame"

    async def body():
        frames, acks = [], []
        async with connect(ws_url(server, session["id"]), additional_headers=AUTH) as ws:
            hello = await recv(ws)
            assert hello["type"] == "hello" and hello["v"] == 1
            assert hello["session_id"] == session["id"] and hello["max_objects"] == MAX_OBJECTS
            while True:
                message = await recv(ws)
                if message["type"] == "end":
                    break
                if message["type"] == "ack":
                    acks.append(message)
                    continue
                assert message["type"] == "frame", message
                frames.append(message)
                if message["frame_idx"] == 3:
                    await send(
                        ws,
                        type="add_points",
                        id="click-1",
                        points=[[160, 100]],
                        labels=[1],
                        frame_idx=3,
                    )
                if acks and len(acks) == 1 and message["frame_idx"] >= acks[0]["frame_idx"] + 2:
                    await send(ws, type="set_options", id="opts", mask_downscale=2)
                    acks.append({"type": "pending"})
        return frames, [a for a in acks if a["type"] == "ack"], message

    frames, acks, end = run(body())
    assert end == {"v": 1, "type": "end", "state": "finished", "error": None, "frames": CLIP_FRAMES}
    # Batch source: every frame, in order, with the source's timestamps.
    assert [f["frame_idx"] for f in frames] == list(range(CLIP_FRAMES))
    assert [f["source_index"] for f in frames] == list(range(CLIP_FRAMES))
    pts = [f["pts"] for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == CLIP_FRAMES
    assert frames[0]["time_base"] == "1/15360"
    assert (frames[0]["width"], frames[0]["height"]) == CLIP_SIZE

    prompt_ack, options_ack = acks
    assert prompt_ack["id"] == "click-1" and prompt_ack["request"] == "add_points"
    obj_id = prompt_ack["obj_id"]
    prompted = prompt_ack["frame_idx"]
    assert prompted >= 3
    [masklet] = [o for o in prompt_ack["objects"] if o["obj_id"] == obj_id]
    mask = decode_rle(masklet["rle"])
    assert mask.shape == (180, 320) and mask.sum() == masklet["area"] > 0
    assert mask[100, 160], "the clicked pixel belongs to the refined mask"

    before = [f for f in frames if f["frame_idx"] <= prompted]
    after = [f for f in frames if f["frame_idx"] > prompted]
    assert all(f["objects"] == [] for f in before)
    assert after and all([o["obj_id"] for o in f["objects"]] == [obj_id] for f in after)
    assert sum(f["objects"][0]["area"] > 0 for f in after) >= len(after) // 2
    for f in after:
        x, y, w, h = f["objects"][0]["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 320 and y + h <= 180
        assert 0.0 <= f["objects"][0]["score"] <= 1.0

    # After set_options(mask_downscale=2), masks come at half size.
    assert options_ack["id"] == "opts"
    halved = [f for f in frames if f["mask_downscale"] == 2]
    assert halved and all(f["objects"][0]["rle"]["size"] == [90, 160] for f in halved)

    state = info(server, session["id"])
    assert state["state"] == "finished" and state["frames_processed"] == CLIP_FRAMES
    assert state["obj_ids"] == [obj_id] and state["subscribers"] == 0
    delete(server, session["id"])


def test_bad_messages_get_errors_and_the_session_keeps_working(server, clip):
    session = create(server, source=str(clip), max_frames=2)

    async def body():
        async with connect(ws_url(server, session["id"]) + f"?token={TOKEN}") as ws:
            await recv_until(ws, "hello")
            await recv_until(ws, "end")  # two frames tracked; prompts still apply to the last

            async def expect_error(raw: str, code: str, request_id=None):
                await ws.send(raw)
                reply = await recv(ws)
                assert reply["type"] == "error", reply
                assert (reply["code"], reply["id"]) == (code, request_id), reply

            await expect_error("{not json", "bad_message")
            await expect_error("[1, 2]", "bad_message")
            await expect_error(json.dumps({"type": "teleport", "id": 1}), "unknown_type", 1)
            await expect_error(
                json.dumps({"v": 2, "type": "reset", "id": 2}), "unsupported_version", 2
            )
            await expect_error(
                json.dumps({"type": "add_points", "id": 3, "points": [[1, 1]], "labels": [1, 0]}),
                "bad_message",
                3,
            )
            await expect_error(
                json.dumps({"type": "add_box", "id": 4, "box": [1, 2]}), "bad_message", 4
            )
            big = {
                "type": "add_points",
                "id": 5,
                "points": [[1, 1]],
                "labels": [1],
                "pad": "x" * (2 * MAX_MESSAGE_BYTES),
            }
            await expect_error(json.dumps(big), "message_too_large")  # not parsed: no id
            await expect_error(
                json.dumps({"type": "add_points", "id": 6, "points": [[999, 10]], "labels": [1]}),
                "out_of_range",
                6,
            )
            await expect_error(
                json.dumps({"type": "add_box", "id": 7, "frame_idx": 50, "box": [1, 1, 9, 9]}),
                "out_of_range",
                7,
            )
            await expect_error(
                json.dumps({"type": "remove_object", "id": 8, "obj_id": 42}), "unknown_object", 8
            )

            # The connection and session still work: two objects fit, a third does not.
            await send(ws, type="add_box", id="a", box=[20, 20, 120, 150])
            first = await recv(ws)
            assert first["type"] == "ack" and first["obj_id"] is not None, first
            await send(ws, type="add_points", id="b", obj_id=7, points=[[250, 60]], labels=[1])
            second = await recv(ws)
            assert second["type"] == "ack" and second["obj_id"] == 7, second
            assert {o["obj_id"] for o in second["objects"]} == {first["obj_id"], 7}
            await expect_error(
                json.dumps({"type": "add_points", "id": "c", "points": [[5, 5]], "labels": [1]}),
                "too_many_objects",
                "c",
            )
            await send(ws, type="remove_object", id="d", obj_id=7)
            removed = await recv(ws)
            assert removed["type"] == "ack"
            assert [o["obj_id"] for o in removed["objects"]] == [first["obj_id"]]
            await send(ws, type="reset", id="e")
            reset = await recv(ws)
            assert reset["type"] == "ack" and reset["objects"] == []
            await expect_error(
                json.dumps({"type": "add_box", "id": "f", "box": [1, 1, 9, 9]}), "not_ready", "f"
            )

    run(body())
    delete(server, session["id"])


def test_unknown_session(server):
    response = httpx.get(f"{server}/sessions/nope", headers=AUTH, timeout=10)
    assert response.status_code == 404 and response.json()["code"] == "unknown_session"
    response = httpx.delete(f"{server}/sessions/nope", headers=AUTH, timeout=10)
    assert response.status_code == 404

    async def body():
        async with connect(ws_url(server, "nope"), additional_headers=AUTH) as ws:
            message = await recv(ws)
            assert message["type"] == "error" and message["code"] == "unknown_session"
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd.code == 4404

    run(body())


def test_bad_or_missing_token_is_refused(server):
    assert httpx.get(f"{server}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{server}/sessions", timeout=10).status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert httpx.get(f"{server}/sessions", headers=bad, timeout=10).status_code == 401
    assert httpx.get(f"{server}/metrics", timeout=10).status_code == 401
    # The client page itself is public (it asks for the token); the API behind it is not.
    assert httpx.get(f"{server}/", timeout=10).status_code == 200
    assert httpx.get(f"{server}/app.js", timeout=10).status_code == 200
    assert httpx.post(f"{server}/", timeout=10).status_code == 401
    assert httpx.get(f"{server}/readyz", timeout=10).status_code == 401
    assert (
        httpx.post(f"{server}/sessions", json={"source": "webrtc"}, timeout=10).status_code == 401
    )
    assert httpx.get(f"{server}/sessions?token={TOKEN}", timeout=10).status_code == 200
    page = httpx.get(f"{server}/", headers=AUTH, timeout=10)
    assert page.status_code == 200 and "sam2-stream" in page.text
    session = create(server, source="webrtc")

    async def body():
        for url, headers in (
            (ws_url(server, session["id"]), bad),
            (ws_url(server, session["id"]), {}),
            (ws_url(server, session["id"]) + "?token=wrong", {}),
        ):
            async with connect(url, additional_headers=headers) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd.code == 4401

    run(body())
    assert info(server, session["id"])["subscribers"] == 0
    delete(server, session["id"])


def test_client_vanishing_frees_its_subscriber_and_others_go_on(server, clip):
    doomed = create(server, source=str(clip))
    other = create(server, source=str(clip), max_frames=8)

    async def body():
        async with connect(ws_url(server, other["id"]), additional_headers=AUTH) as keeper:
            await recv_until(keeper, "hello")
            ws = await connect(ws_url(server, doomed["id"]), additional_headers=AUTH)
            await recv_until(ws, "hello")
            await recv(ws)  # a first frame: the session is being served
            ws.transport.abort()  # no close handshake: the client just disappears
            indices = []
            while (message := await recv(keeper))["type"] != "end":
                assert message["type"] == "frame"
                indices.append(message["frame_idx"])
            return indices, message

    indices, end = run(body())
    assert indices == list(range(8)) and end["state"] == "finished"
    state = poll(lambda: (s := info(server, doomed["id"]))["subscribers"] == 0 and s)
    # With its client gone the doomed session is still tracked (it was started).
    poll(
        lambda: (
            info(server, doomed["id"])["frames_processed"] > state["frames_processed"]
            or info(server, doomed["id"])["state"] == "finished"
        )
    )
    delete(server, doomed["id"])
    delete(server, other["id"])
    assert httpx.get(f"{server}/readyz", headers=AUTH, timeout=10).status_code == 200


def test_concurrent_sessions_and_metrics(server, clip):
    frames_each = 5
    sessions = [create(server, source=str(clip), max_frames=frames_each) for _ in range(3)]

    async def follow(session_id: str) -> list[int]:
        async with connect(ws_url(server, session_id), additional_headers=AUTH) as ws:
            await recv_until(ws, "hello")
            indices = []
            while (message := await recv(ws))["type"] != "end":
                indices.append(message["frame_idx"])
            return indices

    async def body():
        return await asyncio.gather(*(follow(s["id"]) for s in sessions))

    results = run(body())
    assert results == [list(range(frames_each))] * 3

    text = httpx.get(f"{server}/metrics", headers=AUTH, timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}  # the official parser
    assert families["sam2_stream_inference_seconds"].type == "histogram"

    def value(name: str, **labels) -> float:
        matches = [s.value for s in _samples(families, name) if s.labels == labels]
        assert len(matches) == 1, (name, labels)
        return matches[0]

    assert value("sam2_stream_ready") == 1
    assert value("sam2_stream_sessions") >= 3
    assert value("sam2_stream_device_up", device="cpu:0") == 1
    assert value("sam2_stream_device_frames_total", device="cpu:0") >= 3 * frames_each
    for session in sessions:
        sid = session["id"]
        assert value("sam2_stream_frames_processed_total", session=sid) == frames_each
        assert value("sam2_stream_frames_captured_total", session=sid) == frames_each
        assert value("sam2_stream_frames_dropped_total", session=sid) == 0
        assert value("sam2_stream_inference_seconds_count", session=sid) == frames_each
        assert value("sam2_stream_objects", session=sid) == 0
        # A finished batch session: nothing dropped or waiting. Both rates span the same
        # samples and both counters end at frames_each, and a frame is captured before it is
        # processed, so over any window the capture rate is at most the processing rate.
        assert value("sam2_stream_dropped_fps", session=sid) == 0
        assert value("sam2_stream_queue_depth", session=sid) == 0
        capture = value("sam2_stream_capture_fps", session=sid)
        processed = value("sam2_stream_processed_fps", session=sid)
        assert 0 <= capture <= processed, (capture, processed)
        info = [s.labels for s in _samples(families, "sam2_stream_session_info")]
        assert any(i["session"] == sid and i["state"] == "finished" for i in info)
        delete(server, session["id"])


def test_paced_file_is_live_and_drops_frames(server, fast_clip):
    session = create(server, source=str(fast_clip), paced=True)
    assert session["back_pressure"] == "latest_frame"

    async def body():
        async with connect(ws_url(server, session["id"]), additional_headers=AUTH) as ws:
            await recv_until(ws, "hello")
            indices = []
            while (message := await recv(ws))["type"] != "end":
                indices.append(message["source_index"])
            return indices

    indices = run(body())
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    state = info(server, session["id"])
    # Latest-frame policy: every frame is captured, and each one is processed or dropped.
    assert state["frames_captured"] == CLIP_FRAMES
    assert state["frames_processed"] == len(indices)
    assert state["frames_processed"] + state["frames_dropped"] == CLIP_FRAMES
    assert state["frames_dropped"] > 0
    assert indices[-1] == CLIP_FRAMES - 1  # the last frame is never dropped
    delete(server, session["id"])


def test_session_limits_and_bad_requests(server, tmp_path):
    assert (
        httpx.post(f"{server}/sessions", json={"source": ""}, headers=AUTH, timeout=10).status_code
        == 422
    )
    assert (
        httpx.post(
            f"{server}/sessions", json={"source": "webrtc", "bogus": 1}, headers=AUTH, timeout=10
        ).status_code
        == 422
    )

    # A local file that does not exist is refused at once, not by a session that fails later.
    missing = httpx.post(
        f"{server}/sessions",
        json={"source": str(tmp_path / "missing.mp4")},
        headers=AUTH,
        timeout=10,
    )
    assert missing.status_code == 400 and missing.json()["code"] == "invalid_source"
    assert "not found" in missing.json()["message"]
    # A corrupt one is refused at once (its header is probed, issue 19) with the reason in
    # words, FFmpeg's detail at the end.
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video at all" * 100)
    broken = httpx.post(
        f"{server}/sessions", json={"source": str(corrupt)}, headers=AUTH, timeout=10
    )
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_source"
    error = broken.json()["message"]
    assert "not a video FFmpeg can read" in error
    assert error.index("not a video") < error.index("code 1094995529")
    assert "[Errno" not in error

    opened = [create(server, source="webrtc") for _ in range(MAX_SESSIONS)]
    response = httpx.post(f"{server}/sessions", json={"source": "webrtc"}, headers=AUTH, timeout=10)
    assert response.status_code == 429 and response.json()["code"] == "too_many_sessions"
    listed = httpx.get(f"{server}/sessions", headers=AUTH, timeout=10).json()["sessions"]
    assert {s["id"] for s in listed} == {s["id"] for s in opened}
    delete(server, opened[0]["id"])
    replacement = create(server, source="webrtc")
    for session in [*opened[1:], replacement]:
        delete(server, session["id"])
    assert httpx.get(f"{server}/sessions", headers=AUTH, timeout=10).json() == {"sessions": []}


def test_auto_seed_on_the_first_frame_and_on_request(server, clip):
    session = create(server, source=str(clip), auto_seed=True, max_frames=2)

    async def body():
        async with connect(ws_url(server, session["id"]), additional_headers=AUTH) as ws:
            await recv_until(ws, "hello")
            first = await recv(ws, timeout=60)  # the first frame also runs the mask generator
            await recv_until(ws, "end")
            await send(ws, type="auto_seed", id="again")
            return first, await recv(ws, timeout=60)

    first, ack = run(body())
    assert first["type"] == "frame" and first["frame_idx"] == 0
    seeded = [o["obj_id"] for o in first["objects"]]
    assert 1 <= len(seeded) <= MAX_OBJECTS and all(o["area"] > 0 for o in first["objects"])
    assert ack["type"] == "ack" and ack["request"] == "auto_seed" and ack["id"] == "again"
    # Seeding again adds only what the tracked objects do not cover yet.
    assert set(ack["obj_ids"]).isdisjoint(seeded)
    assert {o["obj_id"] for o in ack["objects"]} == set(seeded) | set(ack["obj_ids"])
    delete(server, session["id"])


def _samples(families, name: str):
    """Every sample called `name` (a family's samples carry suffixes such as _total)."""
    return [s for family in families.values() for s in family.samples if s.name == name]


def test_api_docs_work_offline(server):
    page = httpx.get(f"{server}/docs", headers=AUTH, timeout=10)
    assert page.status_code == 200
    assert "cdn" not in page.text and "/docs-assets/swagger-ui-bundle.js" in page.text
    script = httpx.get(f"{server}/docs-assets/swagger-ui-bundle.js", headers=AUTH, timeout=10)
    assert script.status_code == 200 and len(script.content) > 100_000
    assert httpx.get(f"{server}/openapi.json", headers=AUTH, timeout=10).json()["paths"]
