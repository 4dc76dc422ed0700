"""Frame slots, source lifecycle, and the file source (PyAV) on small generated clips."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import pytest

from streamer.ingest import (
    END_OF_STREAM,
    BackPressure,
    FrameSlot,
    FrameSource,
    InvalidTransitionError,
    PushSource,
    SlotClosedError,
    SourceState,
    VideoFrame,
    open_source,
    source_kind,
)
from streamer.ingest.file import FileSource
from streamer.ingest.slot import PendingFrame

WAIT = 10.0  # every wait is bounded


def _frame(index: int) -> VideoFrame:
    return VideoFrame(image=np.zeros((4, 6, 3), np.uint8), index=index, capture_time=0.0)


def _write_clip(path, frames: int = 8, size=(64, 48), rate: int = 25) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), i * 20 % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _drain(source: FrameSource) -> list[VideoFrame]:
    frames = []
    while True:
        item = source.slot.get(timeout=WAIT)
        assert item is not None, "source produced nothing within the wait"
        if item is END_OF_STREAM:
            return frames
        frames.append(item)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("ingest") / "clip.mp4"
    _write_clip(path)
    return path


# --- FrameSlot --------------------------------------------------------------------------------


def test_latest_frame_slot_keeps_newest_and_counts_drops():
    slot = FrameSlot(BackPressure.LATEST_FRAME)
    for i in range(5):
        assert slot.put(_frame(i))
    assert (slot.captured, slot.dropped, len(slot)) == (5, 4, 1)
    assert slot.get(timeout=0).index == 4
    assert slot.get(timeout=0) is None  # empty, still open
    slot.close()
    assert slot.get(timeout=0) is END_OF_STREAM
    with pytest.raises(SlotClosedError):
        slot.put(_frame(5))


def test_latest_frame_slot_converts_only_the_frame_it_hands_out():
    converted: list[int] = []

    def pending(i: int) -> PendingFrame:
        def convert() -> np.ndarray:
            converted.append(i)
            return np.full((4, 6, 3), i, np.uint8)

        return PendingFrame(convert=convert, index=i, pts=i * 10)

    slot = FrameSlot(BackPressure.LATEST_FRAME)
    for i in range(5):
        assert slot.put(pending(i))
    assert converted == []  # nothing converted while frames replace each other
    frame = slot.get(timeout=0)
    assert isinstance(frame, VideoFrame)
    assert (frame.index, frame.pts, int(frame.image[0, 0, 0])) == (4, 40, 4)
    assert converted == [4]
    assert (slot.captured, slot.dropped, slot.taken) == (5, 4, 1)


def test_a_frame_that_fails_to_convert_is_dropped_not_raised():
    def broken() -> np.ndarray:
        raise ValueError("corrupt picture")

    slot = FrameSlot(BackPressure.LATEST_FRAME)
    slot.put(PendingFrame(convert=broken, index=0))
    assert slot.get(timeout=0) is None
    assert (slot.captured, slot.dropped, slot.taken) == (1, 1, 0)
    slot.put(_frame(1))
    assert slot.get(timeout=0).index == 1  # the slot goes on


def test_every_frame_slot_blocks_producer_and_drops_nothing():
    slot = FrameSlot(BackPressure.EVERY_FRAME, capacity=2)
    assert slot.put(_frame(0)) and slot.put(_frame(1))
    assert not slot.put(_frame(2), timeout=0.05)  # full: the producer waits
    done = threading.Event()

    def produce():
        for i in range(2, 6):
            slot.put(_frame(i))
        slot.close()
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    got = []
    while (item := slot.get(timeout=WAIT)) is not END_OF_STREAM:
        assert item is not None
        got.append(item.index)
    assert got == list(range(6))
    assert done.wait(WAIT)
    assert slot.dropped == 0


def test_close_wakes_a_blocked_producer():
    slot = FrameSlot(BackPressure.EVERY_FRAME, capacity=1)
    slot.put(_frame(0))
    raised = threading.Event()

    def produce():
        try:
            slot.put(_frame(1))
        except SlotClosedError:
            raised.set()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    slot.close()
    thread.join(WAIT)
    assert raised.is_set()
    assert slot.get(timeout=0).index == 0  # queued frames are still delivered
    assert slot.get(timeout=0) is END_OF_STREAM


def test_listener_is_set_on_put_and_close():
    slot = FrameSlot(BackPressure.LATEST_FRAME)
    event = threading.Event()
    slot.add_listener(event)
    assert not event.is_set()
    slot.put(_frame(0))
    assert event.is_set()
    event.clear()
    slot.close()
    assert event.is_set()


# --- sources ----------------------------------------------------------------------------------


class _ListSource(FrameSource):
    def __init__(self, frames, fail: str | None = None):
        super().__init__(name="list", policy=BackPressure.EVERY_FRAME, capacity=2)
        self._items, self._fail = frames, fail

    def _frames(self):
        yield from self._items
        if self._fail:
            raise OSError(self._fail)


def test_source_ends_stopped_and_always_closes_its_slot():
    source = _ListSource([_frame(i) for i in range(3)])
    assert source.state is SourceState.STARTING
    source.start()
    assert [f.index for f in _drain(source)] == [0, 1, 2]
    source.stop()
    assert source.state is SourceState.STOPPED and source.error is None


def test_source_error_ends_failed_after_delivered_frames():
    source = _ListSource([_frame(0)], fail="camera unplugged")
    source.start()
    assert [f.index for f in _drain(source)] == [0]
    source.stop()
    assert source.state is SourceState.FAILED
    assert source.error == "camera unplugged"


def test_final_states_allow_no_transition():
    source = _ListSource([])
    source.start()
    _drain(source)
    source.stop()
    with pytest.raises(InvalidTransitionError):
        source._set_state(SourceState.RUNNING)


def test_push_source_feeds_its_slot_and_finishes():
    source = PushSource()
    assert source.policy is BackPressure.LATEST_FRAME
    source.start()
    image = np.zeros((4, 6, 3), np.uint8)
    assert source.push(image, pts=100, time_base=Fraction(1, 90000))
    assert source.push(image, pts=200, time_base=Fraction(1, 90000))
    assert source.state is SourceState.RUNNING
    frame = source.slot.get(timeout=0)
    assert (frame.index, frame.pts, source.stats.dropped) == (1, 200, 1)
    source.finish(error="peer left")
    assert source.state is SourceState.FAILED and source.error == "peer left"
    assert not source.push(image)
    assert source.slot.get(timeout=0) is END_OF_STREAM


# --- file source ------------------------------------------------------------------------------


def test_file_source_batch_gives_every_frame_with_timestamps(clip):
    source = FileSource(clip)
    assert source.policy is BackPressure.EVERY_FRAME
    source.start()
    frames = _drain(source)
    source.stop()
    assert [f.index for f in frames] == list(range(8))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert isinstance(frames[0].time_base, Fraction)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == 8
    assert source.state is SourceState.STOPPED
    assert source.stats.dropped == 0


def test_file_source_paced_is_live(clip):
    source = open_source(str(clip), pace=True)
    assert isinstance(source, FileSource)
    assert source.policy is BackPressure.LATEST_FRAME
    source.start()
    frames = _drain(source)  # a fast consumer: at 25 fps nothing should be dropped
    source.stop()
    assert frames and frames[-1].index == 7
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert source.stats.captured == 8


def test_file_source_max_frames_and_stop(clip):
    source = FileSource(clip, max_frames=3)
    source.start()
    assert len(_drain(source)) == 3
    source.stop()

    source = FileSource(clip)  # stopped while blocked on a full slot
    source.start()
    assert source.slot.get(timeout=WAIT) is not None
    source.stop(timeout=WAIT)
    assert source.state is SourceState.STOPPED
    assert not source._thread.is_alive()


@pytest.mark.parametrize("content", [None, b"not a video at all" * 100])
def test_missing_or_corrupt_file_fails_with_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    source = FileSource(path)
    source.start()
    assert _drain(source) == []
    source.stop()
    assert source.state is SourceState.FAILED
    assert str(path) in source.error
    assert ("not found" in source.error) == (content is None)


def test_source_kinds():
    assert source_kind("rtsp://cam.local/stream") == "rtsp"
    assert source_kind("/dev/video0") == "camera"
    assert source_kind("camera:1") == "camera"
    assert source_kind("webrtc") == "webrtc"
    assert source_kind("clips/a.mp4") == "file"
    assert isinstance(open_source("webrtc"), PushSource)
    with pytest.raises(ValueError):
        open_source("  ")
