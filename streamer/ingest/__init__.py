"""Video ingest: frame sources feeding bounded frame slots.

`open_source(spec)` picks the source for a spec string:

- ``rtsp://...`` -> `streamer.ingest.rtsp.RtspSource`
- ``/dev/video*`` or ``camera:N`` -> `streamer.ingest.camera.CameraSource`
- ``webrtc`` -> a `PushSource` the WebRTC receiver feeds with `push(frame)`
- anything else -> `FileSource` (a file path or a URL PyAV can open)

Source modules other than `base` are imported lazily so the service starts without their
optional dependencies.
"""

from __future__ import annotations

from typing import Any

from streamer.ingest.base import (
    FrameSource,
    InvalidTransitionError,
    PushSource,
    SourceError,
    SourceState,
    SourceStats,
)
from streamer.ingest.limits import FrameLimits, FrameTooLargeError
from streamer.ingest.policy import source_scheme
from streamer.ingest.slot import END_OF_STREAM, BackPressure, FrameSlot, SlotClosedError, VideoFrame

__all__ = [
    "END_OF_STREAM",
    "BackPressure",
    "FrameSlot",
    "FrameLimits",
    "FrameSource",
    "FrameTooLargeError",
    "InvalidTransitionError",
    "PushSource",
    "SlotClosedError",
    "SourceError",
    "SourceState",
    "SourceStats",
    "VideoFrame",
    "open_source",
    "source_kind",
]

WEBRTC_SPEC = "webrtc"


def source_kind(spec: str) -> str:
    """Which source opens `spec`: "rtsp", "camera", "webrtc" or "file" (paths and any URL
    PyAV reads). Derived from `source_scheme`, the one classifier the policy also uses."""
    scheme = source_scheme(spec)
    if scheme in ("rtsp", "rtsps"):
        return "rtsp"
    if scheme in ("camera", WEBRTC_SPEC):
        return scheme
    return "file"


def open_source(
    spec: str,
    *,
    pace: bool | None = None,
    open_timeout: float | None = None,
    read_timeout: float | None = None,
    frame_limits: FrameLimits | None = None,
    **options: Any,
) -> FrameSource:
    """Build (not start) the frame source for `spec`.

    pace: for files, release frames at native fps as a live stream (default False: every
        frame, batch). Ignored by live sources, which are always latest-frame.
    open_timeout / read_timeout: seconds network sources (RTSP, URLs) wait for the
        connection and for each read (None: the source's default; files: forever).
    frame_limits: frames above it are refused (files, RTSP, cameras; default `FrameLimits()`).
    options: passed to the source's constructor (e.g. `max_frames` for files).
    Raises ValueError for an empty spec.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("source spec is empty")
    kind = source_kind(spec)
    timeouts: dict[str, Any] = {
        name: value
        for name, value in (("open_timeout", open_timeout), ("read_timeout", read_timeout))
        if value is not None
    }
    if kind == "rtsp":
        from streamer.ingest.rtsp import RtspSource

        rtsp = RtspSource(spec, **timeouts, **options)
        rtsp.frame_limits = frame_limits or rtsp.frame_limits
        return rtsp
    if kind == "camera":
        from streamer.ingest.camera import CameraSource

        camera = CameraSource(spec, **options)
        camera.frame_limits = frame_limits or camera.frame_limits
        return camera
    if kind == "webrtc":
        return PushSource(name=options.get("name", WEBRTC_SPEC))
    from streamer.ingest.file import FileSource

    return FileSource(spec, pace=bool(pace), frame_limits=frame_limits, **timeouts, **options)
