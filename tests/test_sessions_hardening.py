"""Issue 19 in-process: idle sessions decode nothing, late joiners of an ended session get its
`end`, credentials never reach session info or errors, and a lone surrogate in a request gets
a typed error (micro model, CPU; every wait bounded)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import torch
from media_bombs import write_bilevel_png, write_h264

from streamer.protocol import ErrorCode, ProtocolError, parse_client_message
from streamer.sessions import (
    InvalidSourceError,
    SessionCreate,
    SessionLimitError,
    SessionManager,
    SessionState,
)
from streamer.settings import Settings

TIMEOUT = 30.0


@pytest.fixture
def manager(micro_model):
    threads = torch.get_num_threads()
    manager = SessionManager(model=micro_model, settings=Settings(max_sessions=4))
    manager.start()
    yield manager
    manager.shutdown(timeout=TIMEOUT)
    torch.set_num_threads(threads)


def _decode_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("source-")]


def _wait(predicate, timeout: float = TIMEOUT) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        event.wait(0.05)
    raise AssertionError("condition not met in time")


def test_an_idle_session_holds_no_decode_thread(manager, tmp_path):
    clip = write_h264(tmp_path / "idle.mp4", 64, 48, frames=4)
    before = _decode_threads()
    session = manager.create(SessionCreate(source=str(clip)))
    assert session.state is SessionState.WAITING
    assert _decode_threads() == before and session.source.slot.captured == 0

    async def watch():
        subscriber = session.subscribe()
        while (message := await subscriber.get(timeout=TIMEOUT)) is not None:
            if message.type == "end":
                return message

    end = asyncio.run(asyncio.wait_for(watch(), TIMEOUT))
    assert end.state == "finished" and end.frames == 4


def test_oversized_files_are_refused_at_creation(manager, tmp_path):
    for path in (
        write_h264(tmp_path / "big.mp4", 8192, 8192),
        write_bilevel_png(tmp_path / "big.png", 16000, 16000),
    ):
        with pytest.raises(InvalidSourceError, match="max_frame_pixels|a side"):
            manager.create(SessionCreate(source=str(path)))
    assert manager.list() == []


def test_a_late_joiner_of_a_failed_session_gets_end_with_the_error(manager):
    session = manager.create(SessionCreate(source="webrtc"))
    session.push_source.finish(error="the publisher's camera caught fire")
    _wait(lambda: session.state is SessionState.FAILED)

    async def join():
        subscriber = session.subscribe()
        return await subscriber.get(timeout=TIMEOUT)

    end = asyncio.run(asyncio.wait_for(join(), TIMEOUT))
    assert end.type == "end" and end.state == "failed"
    assert "caught fire" in end.error


def test_source_credentials_never_reach_info_or_errors(manager):
    url = "rtsp://admin:hunter2@127.0.0.1:9/stream"
    session = manager.create(SessionCreate(source=url, start="now"))
    _wait(lambda: session.source.error is not None)
    info = session.info().model_dump_json()
    assert "hunter2" not in info and "admin:***@" in info, info
    assert "127.0.0.1" in session.source.error  # FFmpeg's message, its URL redacted


@pytest.mark.parametrize("raw", [r'{"type": "reset", "id": "\ud800"}', r'{"type": "x\udfff"}'])
def test_a_lone_surrogate_gets_a_typed_error_with_a_null_id(raw):
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(raw, max_bytes=1 << 16)
    reply = caught.value.to_message()
    assert reply.code is ErrorCode.BAD_MESSAGE and reply.id is None
    assert json.loads(reply.model_dump_json())["id"] is None  # serialisable


def test_frame_layout_comes_from_the_source_not_the_shape():
    import numpy as np

    from sam2_video.utils.transforms import frame_to_chw, to_chw_float

    image = np.zeros((3, 60000, 3), np.uint8)  # 60000 wide, 3 high, RGB
    image[:, :, 0] = 255
    assert tuple(frame_to_chw(image).shape) == (3, 3, 60000)
    chw = to_chw_float(image, "cpu")
    assert tuple(chw.shape) == (3, 3, 60000) and float(chw[0].min()) == 1.0


def test_fair_share_is_per_client_as_well_as_per_session():
    from streamer.sessions.fairness import FairShare, by_client

    sessions, clients = FairShare(rejoin_credit=0.0), FairShare(rejoin_credit=0.0)
    owner = {f"a{i}": "greedy" for i in range(20)} | {"b": "modest"}
    served = {"greedy": 0, "modest": 0}
    for _ in range(400):
        first = by_client(sessions.order(owner), owner.get, clients)[0]
        sessions.charge(first, 1.0)
        clients.charge(owner[first], 1.0)
        served[owner[first]] += 1
    assert served == {"greedy": 200, "modest": 200}  # not 20:1


def test_sessions_per_client_are_capped(micro_model):
    manager = SessionManager(
        model=micro_model, settings=Settings(max_sessions=4, max_sessions_per_client=1)
    )
    manager.start()
    try:
        manager.create(SessionCreate(source="webrtc"), owner="addr:10.0.0.1")
        with pytest.raises(SessionLimitError, match="per client"):
            manager.create(SessionCreate(source="webrtc"), owner="addr:10.0.0.1")
        manager.create(SessionCreate(source="webrtc"), owner="addr:10.0.0.2")
    finally:
        manager.shutdown(timeout=TIMEOUT)
