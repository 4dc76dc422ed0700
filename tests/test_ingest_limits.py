"""Issue 19: media bombs, media_root escapes, listening sockets, rotation and credentials in
the ingest layer (frame sources and the source policy), on tiny generated files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from media_bombs import write_bilevel_png, write_h264

from streamer.ingest import END_OF_STREAM, FrameLimits, FrameTooLargeError, SourceState
from streamer.ingest.credentials import redact_credentials, redact_url
from streamer.ingest.file import FileSource, probe_video
from streamer.ingest.policy import SourcePolicy, SourcePolicyError
from streamer.settings import Settings

MiB = 1 << 20
WAIT = 20.0


def _peak_rss_growth(run) -> int:
    """Bytes the process's peak RSS grew by while `run()` ran (Linux: VmHWM reset first)."""
    Path("/proc/self/clear_refs").write_text("5")

    def status(name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(name)

    before = status("VmRSS")
    run()
    return status("VmHWM") - before


def _run_to_end(source: FileSource) -> list:
    source.start()
    frames = []
    try:
        while True:
            item = source.slot.get(timeout=WAIT)
            assert item is not None, "the source neither delivered nor ended"
            if item is END_OF_STREAM:
                return frames
            frames.append(item)
    finally:
        source.stop()


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "h264": write_h264(folder / "8192.mp4", 8192, 8192),
        "png": write_bilevel_png(folder / "16000.png", 16000, 16000),
    }


@pytest.mark.parametrize("kind", ["h264", "png"])
def test_oversized_frames_are_refused_before_they_are_decoded(bombs, kind):
    path = bombs[kind]
    assert path.stat().st_size < 400_000  # tiny files...
    limits = FrameLimits()

    def probe():
        with pytest.raises(FrameTooLargeError, match="max_frame_pixels|a side"):
            probe_video(str(path), limits)

    assert _peak_rss_growth(probe) < 100 * MiB  # ...that decode to 200 MB-2 GB

    source = FileSource(path, frame_limits=limits)
    grown = _peak_rss_growth(lambda: _run_to_end(source))
    assert source.state is SourceState.FAILED and source.slot.captured == 0
    assert "8192x8192" in source.error or "max_frame_pixels" in source.error, source.error
    assert grown < 100 * MiB, f"peak RSS grew {grown / MiB:.0f} MiB"


def test_frame_limits_check_sides_and_area():
    limits = FrameLimits(max_pixels=100 * 100, max_side=150)
    assert limits.problem(100, 100) is None and limits.problem(0, 0) is None
    assert "a side" in limits.problem(151, 2)
    assert "max_frame_pixels" in limits.problem(101, 100)
    settings = Settings(max_frame_pixels=640 * 480, max_frame_side=1000)
    assert FrameLimits.from_settings(settings) == FrameLimits(640 * 480, 1000)


def test_every_decoded_frame_is_checked_too(tmp_path):
    # The header says 64x48; a limit between the header check and the frames is impossible
    # to build with one file, so check a frame limit below the clip's size on each frame.
    path = write_h264(tmp_path / "small.mp4", 64, 48, frames=3)
    source = FileSource(path, frame_limits=FrameLimits(max_pixels=64 * 48 - 1))
    assert _run_to_end(source) == [] and source.state is SourceState.FAILED
    assert "64x48" in source.error


def test_rotation_metadata_turns_frames_upright(tmp_path):
    # Stored 64x32, left half white; displayed rotated 90 degrees counterclockwise: 32x64
    # with the white half at the bottom.
    path = write_h264(tmp_path / "rotated.mp4", 64, 32, frames=1, rotation=90)
    (frame,) = _run_to_end(FileSource(path))
    assert frame.image.shape == (64, 32, 3) and frame.image.flags.c_contiguous
    gray = frame.image.mean(axis=2)
    assert gray[40:].mean() > 200 and gray[:24].mean() < 50


def test_playlists_inside_media_root_cannot_reach_outside(tmp_path):
    outside = write_h264(tmp_path / "outside.mp4", 64, 48)
    root = tmp_path / "media"
    root.mkdir()
    segment_lines = [f"file://{outside}", os.path.relpath(outside, root)]
    policy = SourcePolicy(allowed=frozenset({"file"}), media_root=root)
    for i, segment in enumerate(segment_lines):
        playlist = root / f"p{i}.m3u8"
        playlist.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n" + segment + "\n#EXT-X-ENDLIST\n"
        )
        spec = policy.resolve(str(playlist))  # the playlist itself lies under the root
        with pytest.raises(Exception, match="playlists"):
            probe_video(spec, FrameLimits())
        source = FileSource(spec)
        assert _run_to_end(source) == [] and "playlists" in source.error
    concat = root / "list.ffconcat"
    concat.write_text(f"ffconcat version 1.0\nfile '{outside}'\n")
    with pytest.raises(Exception, match="playlists"):
        probe_video(str(concat), FrameLimits())
    # A plain video under the root still opens.
    inside = write_h264(root / "inside.mp4", 64, 48)
    assert len(_run_to_end(FileSource(policy.resolve(str(inside))))) == 2


@pytest.mark.parametrize(
    "spec",
    [
        "tcp://0.0.0.0:9999?listen=1",
        "tcp://127.0.0.1:9999?listen=1",
        "udp://0.0.0.0:9999",
        "udp://[::]:9999",
        "udp://:9999",
        "srt://127.0.0.1:9000?mode=listener",
        "rtp://0.0.0.0:5004",
    ],
)
def test_socket_sources_may_not_listen(spec):
    policy = SourcePolicy(allowed=frozenset({"tcp", "udp", "srt", "rtp"}))
    with pytest.raises(SourcePolicyError, match="listen|wildcard"):
        policy.resolve(spec)


def test_socket_schemes_are_off_by_default():
    policy = SourcePolicy.from_settings(Settings())
    for spec in ("tcp://127.0.0.1:9", "udp://127.0.0.1:9", "rtp://127.0.0.1:9", "srt://h:9"):
        with pytest.raises(SourcePolicyError, match="not allowed"):
            policy.resolve(spec)
    enabled = SourcePolicy(allowed=frozenset({"tcp", "udp"}))
    assert enabled.resolve("tcp://127.0.0.1:9") == "tcp://127.0.0.1:9"


def test_credentials_are_redacted_everywhere_in_text():
    text = "Error opening 'rtsp://admin:hunter2@10.0.0.9:554/s': refused; rtsp://tok3n@h/x"
    clean = redact_credentials(text)
    assert "hunter2" not in clean and "tok3n" not in clean
    assert "rtsp://admin:***@10.0.0.9:554/s" in clean
    assert redact_url("rtsp://u:p%40ss@h/x") == "rtsp://u:***@h/x"
    assert redact_url("rtsp://u:p@ss@h/x") == "rtsp://u:***@h/x"
    assert redact_url("rtsp://h/x") == "rtsp://h/x"


def test_file_url_credentials_never_reach_the_error(tmp_path):
    source = FileSource("http://user:hunter2@127.0.0.1:9/x.mp4", open_timeout=2, read_timeout=2)
    _run_to_end(source)
    assert source.state is SourceState.FAILED and "hunter2" not in source.error
    assert "hunter2" not in source.name


def test_frames_are_numpy_rgb(tmp_path):
    path = write_h264(tmp_path / "c.mp4", 64, 48, frames=1)
    (frame,) = _run_to_end(FileSource(path))
    assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 64, 3)


def test_errors_name_the_real_cause_of_a_lying_header(tmp_path):
    path = tmp_path / "lie.y4m"
    path.write_bytes(b"YUV4MPEG2 W0 H0 F25:1\nFRAME\n")
    with pytest.raises(Exception, match="header is invalid"):
        probe_video(str(path), FrameLimits())


def test_an_rtsp_stream_of_oversized_frames_fails_without_reconnecting(tmp_path):
    from rtsp_server import RtspTestServer, unavailable_reason

    from streamer.ingest.rtsp import RtspSource

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    clip = write_h264(tmp_path / "stream.mp4", 64, 48, frames=60)
    with RtspTestServer(clip) as server:
        source = RtspSource(server.url)
        source.frame_limits = FrameLimits(max_pixels=64 * 48 - 1)
        try:
            source.start()
            assert source.slot.get(timeout=WAIT) is END_OF_STREAM
        finally:
            source.stop()
    assert source.state is SourceState.FAILED and source.slot.captured == 0
    assert "64x48" in source.error or "max_frame_pixels" in source.error, source.error
    assert source.reconnect_attempts == 0


def test_decoding_ahead_is_bounded_across_slots_and_never_starves_one():
    from streamer.ingest.slot import BackPressure, DecodeBudget, FrameSlot, VideoFrame

    def frame(i: int) -> VideoFrame:
        return VideoFrame(image=np.zeros((10, 10, 3), np.uint8), index=i)  # 300 bytes

    budget = DecodeBudget(300)  # one frame beyond each slot's first
    a = FrameSlot(BackPressure.EVERY_FRAME, capacity=4, budget=budget)
    b = FrameSlot(BackPressure.EVERY_FRAME, capacity=4, budget=budget)
    assert a.put(frame(0), timeout=0) and a.put(frame(1), timeout=0)  # free + budget
    assert budget.used == 300
    assert not a.put(frame(2), timeout=0.1)  # the budget is spent
    assert b.put(frame(0), timeout=0)  # but every slot's first frame is free
    assert not b.put(frame(1), timeout=0.1)
    assert a.get(timeout=1).index == 0  # a's consumer takes a frame: its charge goes back...
    assert budget.used == 0
    assert b.put(frame(1), timeout=1)  # ...and b may decode ahead again
    a.close()
    b.close()
    assert budget.used == 0
