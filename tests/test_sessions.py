"""The service layer in-process, as the WebRTC side uses it: a "webrtc" session fed through its
`PushSource`, results through a subscriber and a result listener, prompts through `submit`.

Micro model on CPU; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction

import numpy as np
import pytest
import torch

from streamer.ingest import SourceState
from streamer.protocol import Ack, AddPoints, End, Error, ErrorCode, FrameMessage, RemoveObject
from streamer.sessions import (
    SessionCreate,
    SessionEndedError,
    SessionLimitError,
    SessionManager,
    SessionNotFoundError,
    SessionState,
)
from streamer.settings import Settings

TIMEOUT = 30.0


@pytest.fixture
def manager(micro_model):
    threads = torch.get_num_threads()  # the worker sets 1 thread on CPU, process-wide
    manager = SessionManager(model=micro_model, settings=Settings(max_sessions=2))
    manager.start()
    yield manager
    manager.shutdown(timeout=TIMEOUT)
    torch.set_num_threads(threads)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 40, np.uint8)
    image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 220  # a bright square to click on
    return np.clip(image + rng.integers(0, 10, image.shape), 0, 255).astype(np.uint8)


async def _next(subscriber, kind: str) -> FrameMessage | Ack | Error | End:
    while True:
        message = await subscriber.get(timeout=TIMEOUT)
        assert message is not None, f"no {kind} message in time"
        if message.type == kind:
            return message


def test_push_source_session_with_subscriber_listener_and_prompts(manager):
    session = manager.create(SessionCreate(source="webrtc"))
    assert session.kind == "webrtc" and session.live and session.push_source is not None
    seen = []
    listened = threading.Event()

    def listener(frame, result):
        seen.append((frame.image.shape, result.masks.shape))
        listened.set()

    async def body():
        subscriber = session.subscribe()
        session.add_result_listener(listener)
        tb = Fraction(1, 90000)
        session.push_source.push(_image(120, 160, 0), pts=3000, time_base=tb)
        first = await _next(subscriber, "frame")
        assert (first.frame_idx, first.pts, first.time_base) == (0, 3000, "1/90000")
        assert (first.width, first.height, first.objects) == (160, 120, [])

        future = session.submit(
            AddPoints(type="add_points", id="p", points=[(80, 60)], labels=[1]),
            reply_to=subscriber,
        )
        ack = await _next(subscriber, "ack")
        assert ack is await asyncio.wait_for(asyncio.wrap_future(future), TIMEOUT)
        assert ack.id == "p" and ack.frame_idx == 0 and ack.objects[0].obj_id == ack.obj_id

        # A new resolution mid-stream is scaled to the session's size; tracking goes on.
        session.push_source.push(_image(240, 320, 1), pts=6000, time_base=tb)
        second = await _next(subscriber, "frame")
        assert (second.frame_idx, second.width, second.height) == (1, 160, 120)
        assert [o.obj_id for o in second.objects] == [ack.obj_id]

        session.submit(RemoveObject(type="remove_object", id=9, obj_id=12345), reply_to=subscriber)
        error = await _next(subscriber, "error")
        assert (error.id, error.code) == (9, ErrorCode.UNKNOWN_OBJECT)

        await asyncio.to_thread(manager.delete, session.id)
        end = await _next(subscriber, "end")
        assert end.state == "closed" and end.frames == 2
        assert await subscriber.get(timeout=TIMEOUT) is None  # closed after the end

    asyncio.run(asyncio.wait_for(body(), 4 * TIMEOUT))
    assert listened.is_set()
    assert seen == [((120, 160, 3), (0, 120, 160)), ((120, 160, 3), (1, 120, 160))]
    assert session.state is SessionState.CLOSED
    assert session.source.state is SourceState.STOPPED
    with pytest.raises(SessionEndedError):
        session.submit(RemoveObject(type="remove_object", obj_id=1))
    with pytest.raises(SessionNotFoundError):
        manager.get(session.id)


def test_limits_and_worker_end(manager):
    a = manager.create("webrtc")
    manager.create("webrtc")
    with pytest.raises(SessionLimitError):
        manager.create("webrtc")
    manager.delete(a.id)
    manager.create("webrtc")
    assert manager.ready
    manager.shutdown(timeout=TIMEOUT)
    assert all(s.ended.wait(TIMEOUT) for s in manager.schedulers.values())
    assert not manager.ready
    assert manager.list() == []


def test_dam4sam_session_reports_memory_and_promotions(manager):
    """A session created with memory="dam4sam" tracks with it: its info says so, and the
    frames promoted to the distractor-resolving memory are reported per frame and counted."""
    from pathlib import Path

    clip = np.load(Path(__file__).parent / "fixtures" / "dam4sam" / "clip.npz")["frames_uint8"]
    session = manager.create(SessionCreate(source="webrtc", memory="dam4sam"))
    assert session.info().memory == "dam4sam" and session.info().promotions == 0

    async def body():
        subscriber = session.subscribe()
        promoted = []
        session.push_source.push(clip[0])
        await _next(subscriber, "frame")
        session.submit(
            AddPoints(type="add_points", points=[(40, 90)], labels=[1]), reply_to=subscriber
        )
        await _next(subscriber, "ack")
        for t in range(1, 16):
            session.push_source.push(clip[t])
            message = await _next(subscriber, "frame")
            assert message.frame_idx == t
            promoted += [(t, obj_id) for obj_id in message.promoted]
        return promoted

    promoted = asyncio.run(asyncio.wait_for(body(), 8 * TIMEOUT))
    assert promoted, "the look-alike discs should promote frames"
    assert session.info().promotions == len(promoted)
    gaps = [b[0] - a[0] for a, b in zip(promoted, promoted[1:])]
    assert all(gap > 5 for gap in gaps)  # never within 5 frames of the last promotion
