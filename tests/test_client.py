"""The client library (`streamer.client`), sync and async, against a live `sam2-stream serve`
(micro model, 127.0.0.1): file and WebRTC sessions, clicks, boxes, masks, auto-seeding,
masklets as numpy masks with ids and pts, and typed errors. Every wait is bounded (the
client's own timeouts)."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import numpy as np
import pytest
import test_webrtc
from conftest import DATA
from serve_process import running_server
from test_webrtc import ClipTrack

from streamer.client import (
    AsyncClient,
    AuthError,
    Client,
    ForbiddenError,
    HTTPError,
    NotFoundError,
    RequestError,
    SessionEndedError,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
TOKEN = "client-test-token"
CLIP = str(DATA / "bedroom.mp4")
TIMEOUT = 60.0
clip_frames = test_webrtc.clip_frames  # fixtures used by name
loopback_ice = test_webrtc.loopback_ice


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]'}
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log_path, TOKEN, env, ready_timeout=120.0) as base:
        yield base


def test_sync_file_session_click_and_masklets(server):
    with Client(server, token=TOKEN, timeout=TIMEOUT) as client:
        session = client.open_session(CLIP, max_frames=12)
        assert session.hello["type"] == "hello" and session.hello["source"] == CLIP
        [first] = session.frames(limit=1)  # prompts need a current frame
        reply = session.add_points([[200, 117]], [1])
        [masklet] = reply.objects
        assert reply.request == "add_points" and masklet.obj_id == reply.obj_id
        assert masklet.mask.dtype == bool and masklet.mask.shape == (first.height, first.width)
        assert masklet.mask.sum() == masklet.area > 0
        box = session.add_box([20, 20, 120, 100])
        assert box.obj_id != reply.obj_id
        frames = list(session.frames())  # to the end of the file (max_frames)
        assert frames and session.end is not None and session.end["state"] == "finished"
        tracked = [f for f in frames if f.objects]
        assert tracked, "no frame carried the objects"
        for frame in tracked:
            assert {m.obj_id for m in frame.objects} <= {reply.obj_id, box.obj_id}
            assert isinstance(frame.time_base, Fraction) and frame.pts is not None
            assert all(m.mask.shape == (frame.height, frame.width) for m in frame.objects)
        with pytest.raises(SessionEndedError):
            session.add_points([[10, 10]], [1])
        session.delete()
        with pytest.raises(NotFoundError) as error:
            client.session(session.id)
        assert error.value.status == 404 and error.value.code == "unknown_session"


def test_async_masks_auto_seed_and_request_errors(server):
    async def body():
        async with AsyncClient(server, token=TOKEN, timeout=TIMEOUT) as client:
            session = await client.open_session(CLIP, max_frames=40)
            try:
                first = [f async for f in session.frames(limit=1)][0]
                mask = np.zeros((first.height, first.width), bool)
                mask[40:120, 100:220] = True
                given = await session.add_mask(mask, obj_id=5)
                seeded = await session.auto_seed()
                with pytest.raises(RequestError) as unknown:
                    await session.remove_object(999)
                with pytest.raises(RequestError) as outside:
                    await session.add_points([[5000, 5000]], [1])
                later = []  # frames tracked after the prompts (older ones may still be queued)
                async for frame in session.frames():
                    if frame.frame_idx > seeded.frame_idx:
                        later.append(frame)
                    if len(later) == 2:
                        break
            finally:
                await session.delete()
            return given, seeded, unknown.value, outside.value, later

    given, seeded, unknown, outside, later = asyncio.run(asyncio.wait_for(body(), 300))
    assert given.obj_id == 5 and given.objects[0].mask[60, 150]
    assert seeded.request == "auto_seed" and 5 not in seeded.obj_ids
    assert unknown.code == "unknown_object" and outside.code == "out_of_range"
    assert len(later) == 2
    for frame in later:
        assert set(frame.masks()) <= {5, *seeded.obj_ids}


def test_publish_webrtc_into_a_session(server, clip_frames, loopback_ice):
    async def body():
        async with AsyncClient(server, token=TOKEN, timeout=TIMEOUT) as client:
            session = await client.open_session("webrtc")
            try:
                await session.publish(ClipTrack(clip_frames))
                [first] = [f async for f in session.frames(limit=1)]
                reply = await session.add_points([[200, 117]], [1])
                tracked = []
                async for frame in session.frames(timeout=TIMEOUT):
                    if frame.objects:
                        tracked.append(frame)
                    if len(tracked) == 3:
                        break
            finally:
                await session.delete()
            return first, reply, tracked

    first, reply, tracked = asyncio.run(asyncio.wait_for(body(), 300))
    assert (first.width, first.height) == test_webrtc.CLIP_SIZE
    assert reply.objects and all(f.objects[0].obj_id == reply.obj_id for f in tracked)


def test_per_session_tokens_drive_and_watch(server):
    """A created session's own token (docs/protocol.md, "Authorization") drives it from a
    client whose service token is useless; its viewer token watches but may not prompt."""
    with Client(server, token=TOKEN, timeout=TIMEOUT) as owner:
        created = owner.open_session(CLIP, max_frames=40)
        assert created.token and created.viewer_token and created.token != TOKEN
        try:
            with Client(server, token="not-the-service-token", timeout=TIMEOUT) as other:
                with pytest.raises(AuthError):
                    other.session(created.id)  # its own token is unknown
                driver = other.session(created.id, token=created.token)
                [first] = driver.frames(limit=1)
                reply = driver.add_points([[200, 117]], [1])
                assert reply.objects and reply.objects[0].mask.shape == (first.height, first.width)
            with Client(server, timeout=TIMEOUT) as viewer_client:
                viewer = viewer_client.session(created.id, token=created.viewer_token)
                assert viewer.hello["type"] == "hello"
                with pytest.raises(RequestError) as refused:
                    viewer.add_points([[200, 117]], [1])
                assert refused.value.code == "forbidden"
                with pytest.raises(ForbiddenError) as error:
                    viewer.delete()
                assert error.value.status == 403
        finally:
            created.delete()


def test_typed_errors_for_token_and_source(server):
    with Client(server, token="wrong", timeout=TIMEOUT) as client:
        with pytest.raises(AuthError) as error:
            client.open_session(CLIP)
        assert error.value.status == 401
    with Client(server, token=TOKEN, timeout=TIMEOUT) as client:
        with pytest.raises(HTTPError) as error:
            client.open_session(str(DATA / "no-such-file.mp4"))
        assert error.value.status == 400 and "no-such-file.mp4" in error.value.message


def test_sync_publish_as_in_the_readme(server, clip_frames, loopback_ice):
    with (
        Client(server, token=TOKEN, timeout=TIMEOUT) as client,
        client.open_session("webrtc") as session,
    ):
        session.publish(ClipTrack(clip_frames))
        [first] = session.frames(limit=1)
        reply = session.add_points([[200, 117]], [1])
        tracked = [f for f in session.frames(limit=6) if f.objects]
        session.delete()
    assert first.width == test_webrtc.CLIP_SIZE[0] and reply.objects[0].mask.sum() > 0
    assert tracked and all(f.objects[0].obj_id == reply.obj_id for f in tracked)
