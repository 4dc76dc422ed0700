"""`CameraSource`: a local V4L2 camera (`/dev/videoN`) decoded with PyAV, live.

Like the RTSP source it is latest-frame-wins and reopens the device after a read error (a USB
camera unplugged and plugged back), but a device that is missing or cannot be opened when the
source starts ends it FAILED at once with a message saying why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from streamer.ingest.base import SourceError
from streamer.ingest.rtsp import Backoff, ReconnectingSource

_CAMERA_INDEX = re.compile(r"camera:(\d+)")


def camera_device(spec: str) -> Path:
    """`camera:N` -> `/dev/videoN`; a path is returned as is. Raises ValueError otherwise."""
    match = _CAMERA_INDEX.fullmatch(spec.strip())
    if match:
        return Path(f"/dev/video{match.group(1)}")
    if spec.startswith("/dev/"):
        return Path(spec)
    raise ValueError(f"not a camera spec (want /dev/videoN or camera:N): {spec!r}")


class CameraSource(ReconnectingSource):
    """Frames of a V4L2 camera.

    spec: `/dev/videoN` or `camera:N`.
    size: (width, height) to ask the driver for; None keeps the device's current mode.
    fps: frame rate to ask for; None keeps the device's current rate.
    input_format: V4L2 pixel format to ask for (e.g. "mjpeg", "yuyv422"); None: the default.
    backoff / max_attempts: reconnection after the device fails mid-stream (see
        `ReconnectingSource`).
    """

    def __init__(
        self,
        spec: str,
        *,
        name: str | None = None,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
        input_format: str | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.device = camera_device(spec)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (width, height) > 0, got {size}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        super().__init__(name=name or str(self.device), backoff=backoff, max_attempts=max_attempts)
        self.options: dict[str, str] = {}
        if size is not None:
            self.options["video_size"] = f"{int(size[0])}x{int(size[1])}"
        if fps is not None:
            self.options["framerate"] = f"{fps:g}"
        if input_format is not None:
            self.options["input_format"] = input_format

    def _open(self) -> Any:
        import av

        if not self._connected_once:
            # Fail fast and clearly at start; later (after an unplug) keep retrying instead.
            if not self.device.exists():
                raise SourceError(f"camera device {self.device} does not exist")
            try:
                return av.open(str(self.device), format="v4l2", options=self.options)
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceError(f"cannot open camera {self.device}: {exc}") from exc
        return av.open(str(self.device), format="v4l2", options=self.options)
