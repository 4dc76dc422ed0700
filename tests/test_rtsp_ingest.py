"""Live ingest: `RtspSource` against a real RTSP server on 127.0.0.1, and `CameraSource` errors.

The server is GStreamer's (tests/rtsp_server.py, run with Debian's python3); the RTSP tests
skip when it is not installed (CI installs it). Waits are bounded polls, never fixed sleeps.
"""

from __future__ import annotations

import socket
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from rtsp_server import RtspTestServer, free_port, unavailable_reason
from waiting import poll

from sam2_video.predictors.streaming import StreamingSession
from streamer.ingest import END_OF_STREAM, SourceState, VideoFrame, open_source
from streamer.ingest.camera import CameraSource, camera_device
from streamer.ingest.rtsp import Backoff, RtspSource, redact_url

BEDROOM = Path(__file__).parent / "data" / "bedroom.mp4"
WIDTH, HEIGHT = 320, 180
FAST_BACKOFF = Backoff(initial=0.1, maximum=0.4)


def write_clip(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """H.264 mp4 with a key frame every 15 frames (RGB (H, W, 3) uint8 frames)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"tune": "zerolatency"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = 15
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`long`: 20 s at 6 fps (outlives a test's connection even on a busy machine);
    `short`: 1/3 s at 30 fps (ends quickly)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("rtsp_clips")
    frames = []
    with av.open(str(BEDROOM)) as container:
        for decoded in container.decode(video=0):
            frames.append(decoded.to_ndarray(format="rgb24", width=WIDTH, height=HEIGHT))
            if len(frames) == 120:
                break
    return {
        "long": write_clip(folder / "long.mp4", frames, fps=6),
        "short": write_clip(folder / "short.mp4", frames[:10], fps=30),
    }


@pytest.fixture
def server(clips: dict[str, Path]):
    with RtspTestServer(clips["long"]) as running:
        yield running


def latest_frame(source: RtspSource, timeout: float = 5.0) -> VideoFrame:
    frame = source.slot.get(timeout=timeout)
    assert isinstance(frame, VideoFrame), f"no frame within {timeout} s (got {frame!r})"
    return frame


def test_frames_flow_and_survive_a_server_restart(server: RtspTestServer, micro_model) -> None:
    # A tracking session consumes the source, as the service's worker does: it must not
    # notice the outage beyond a gap in frame indices.
    session = StreamingSession(micro_model)
    source = RtspSource(server.url, backoff=FAST_BACKOFF)
    source.start()
    try:
        poll(lambda: source.captured >= 3, 15, "the first frames")
        assert source.state is SourceState.RUNNING
        frame = latest_frame(source)
        assert frame.image.shape == (HEIGHT, WIDTH, 3) and frame.image.dtype == np.uint8
        assert frame.time_base == Fraction(1, 90000)  # RTP video clock
        assert frame.capture_time > 0
        session.add_frame(frame.image, pts=frame.pts)
        session.add_box(1, np.array([100, 20, 220, 170]))
        session.add_frame(latest_frame(source).image)
        # Latest frame wins: frames nobody takes are replaced by newer ones, and counted.
        dropped = source.dropped
        poll(lambda: source.dropped > dropped, 5, "a dropped frame")
        before = latest_frame(source).index
        reconnects = source.reconnects  # the clip outlives this connection, but be sure

        server.kill()
        poll(lambda: source.state is SourceState.RECONNECTING, 10, "RECONNECTING")
        assert source.error
        # While the server is down the source keeps trying (connection refused each time).
        attempts = source.reconnect_attempts
        poll(lambda: source.reconnect_attempts >= attempts + 2, 10, "more attempts")
        assert source.state is SourceState.RECONNECTING
        assert "refused" in source.error.lower()
        captured_while_down = source.captured
        assert source.reconnects == reconnects

        server.start()  # same port, same URL
        poll(lambda: source.captured >= captured_while_down + 3, 15, "frames after restart")
        assert source.state is SourceState.RUNNING
        assert source.reconnects == reconnects + 1
        assert source.error is None
        after = latest_frame(source)
        assert after.index > before  # one stream of frames for the consumer, across the outage
        result = session.add_frame(after.image, pts=after.pts)
        assert result.frame_idx == 2 and result.obj_ids == [1]
        assert result.masks.shape == (1, HEIGHT, WIDTH)
    finally:
        started = time.monotonic()
        source.stop()
        stop_seconds = time.monotonic() - started
    assert stop_seconds < 1.0
    assert source.state is SourceState.STOPPED
    assert not source._thread.is_alive()
    # A frame left in the slot is still handed out, then the end marker.
    if source.slot.get(timeout=1) is not END_OF_STREAM:
        assert source.slot.get(timeout=1) is END_OF_STREAM


def test_end_of_stream_reconnects_and_keeps_counting(clips: dict[str, Path]) -> None:
    with RtspTestServer(clips["short"]) as server:
        source = RtspSource(server.url, backoff=FAST_BACKOFF)
        source.start()
        try:
            # The 10-frame clip ends; the source reopens it and frames keep coming.
            poll(lambda: source.reconnects >= 1 and source.captured > 12, 20, "a replay")
            indices = []
            deadline = time.monotonic() + 10
            while len(indices) < 2 and time.monotonic() < deadline:
                frame = source.slot.get(timeout=0.1)
                if isinstance(frame, VideoFrame):
                    indices.append(frame.index)
            assert len(indices) == 2 and indices[0] < indices[1]
            assert indices[0] >= 10  # indices run on across connections
        finally:
            source.stop()
    assert source.state is SourceState.STOPPED


def test_stop_interrupts_the_backoff_wait() -> None:
    source = RtspSource(
        f"rtsp://127.0.0.1:{free_port()}/none", backoff=Backoff(initial=30, maximum=30)
    )
    source.start()
    poll(lambda: source.state is SourceState.RECONNECTING, 10, "RECONNECTING")
    assert "refused" in source.error.lower()
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 1.0
    assert source.state is SourceState.STOPPED
    assert source.slot.get(timeout=1) is END_OF_STREAM


def test_silent_server_times_out_and_stop_stays_prompt() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/stream"
        source = RtspSource(url, open_timeout=0.5, read_timeout=0.5, backoff=FAST_BACKOFF)
        source.start()
        try:
            poll(lambda: source.state is SourceState.RECONNECTING, 10, "the open to time out")
        finally:
            started = time.monotonic()
            source.stop()
            stop_seconds = time.monotonic() - started
    assert stop_seconds < 1.5  # at most one open_timeout
    assert source.state is SourceState.STOPPED


def test_gives_up_after_max_attempts() -> None:
    source = RtspSource(
        f"rtsp://127.0.0.1:{free_port()}/none",
        backoff=Backoff(initial=0.01, maximum=0.01),
        max_attempts=3,
    )
    source.start()
    poll(lambda: source.state.ended, 10, "the source to give up")
    assert source.state is SourceState.FAILED
    assert "gave up after 3 attempts" in source.error
    assert source.reconnect_attempts == 2  # first attempt + 2 retries
    assert source.slot.get(timeout=1) is END_OF_STREAM


def test_backoff_grows_and_is_bounded() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]
    with pytest.raises(ValueError):
        Backoff(initial=2.0, maximum=1.0)
    with pytest.raises(ValueError):
        Backoff(initial=0.0)


def test_rtsp_source_validates_and_redacts() -> None:
    with pytest.raises(ValueError, match="not an RTSP URL"):
        RtspSource("http://example.invalid/stream")
    source = open_source("rtsp://user:secret@127.0.0.1:1/cam")
    assert isinstance(source, RtspSource)
    assert source.name == "rtsp://user:***@127.0.0.1:1/cam"
    assert source.options["rtsp_transport"] == "tcp" and source.options["probesize"] == "32"
    assert redact_url("rtsp://127.0.0.1/x") == "rtsp://127.0.0.1/x"


# --- camera -----------------------------------------------------------------------------------


def test_camera_spec_parsing() -> None:
    assert camera_device("camera:3") == Path("/dev/video3")
    assert camera_device("/dev/video1") == Path("/dev/video1")
    with pytest.raises(ValueError):
        camera_device("camera:x")
    assert isinstance(open_source("camera:0"), CameraSource)


def test_missing_camera_fails_clearly() -> None:
    device = next(f"/dev/video{n}" for n in range(90, 200) if not Path(f"/dev/video{n}").exists())
    source = CameraSource(device)
    source.start()
    poll(lambda: source.state.ended, 10, "the camera source to fail")
    assert source.state is SourceState.FAILED
    assert source.error == f"camera device {device} does not exist"
    assert source.slot.get(timeout=1) is END_OF_STREAM


def test_device_that_is_not_a_camera_fails_clearly() -> None:
    source = CameraSource("/dev/null", size=(640, 480), fps=30)
    assert source.options == {"video_size": "640x480", "framerate": "30"}
    source.start()
    poll(lambda: source.state.ended, 10, "the camera source to fail")
    assert source.state is SourceState.FAILED
    assert source.error.startswith("cannot open camera /dev/null")
