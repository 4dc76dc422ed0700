"""`FileSource`: frames of a video file or URL decoded with PyAV."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from streamer.ingest.base import (
    BackPressure,
    FrameSource,
    PendingFrame,
    SourceError,
    SourceState,
    VideoFrame,
)

logger = logging.getLogger(__name__)

_URL_SCHEMES = (
    "http://", "https://", "rtmp://", "rtmps://", "srt://", "udp://", "tcp://", "rtp://", "file:",
)  # fmt: skip


class FileSource(FrameSource):
    """Decode a video file (or a URL PyAV can open) on a thread.

    path_or_url: a local file, or a URL with a scheme FFmpeg understands.
    pace: False (batch) -> every frame in order, the decoder waits for the consumer
        (`EVERY_FRAME`); True (live simulation) -> frames are released at the video's native
        rate, a slow consumer sees only the newest (`LATEST_FRAME`, drops counted).
    max_frames: stop after this many frames (None: the whole video).
    open_timeout / read_timeout: for URLs, seconds to wait for the connection and then for
        each read; past them the source goes STALLED, then FAILED (None: wait forever).
        They also bound how long the decode thread can outlive `stop()`.

    A missing, unreadable or corrupt file ends the source FAILED with `error` saying why.
    """

    def __init__(
        self,
        path_or_url: str | Path,
        *,
        pace: bool = False,
        max_frames: int | None = None,
        name: str | None = None,
        open_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.location = str(path_or_url)
        self.pace = pace
        self.max_frames = max_frames
        policy = BackPressure.LATEST_FRAME if pace else BackPressure.EVERY_FRAME
        super().__init__(name=name or Path(self.location).name or self.location, policy=policy)

    def _frames(self) -> Iterator[VideoFrame | PendingFrame]:
        import av  # lazily: importing the service must not need FFmpeg

        is_url = self.location.startswith(_URL_SCHEMES)
        if not is_url and not Path(self.location).is_file():
            raise SourceError(f"video file not found: {self.location}")
        timeout = None
        if is_url and (self.open_timeout or self.read_timeout):
            timeout = (self.open_timeout, self.read_timeout)
        try:
            container = av.open(self.location, timeout=timeout)
        except av.error.ExitError as exc:  # the open timeout fired
            self._stalled(f"no answer from {self.name} within {self.open_timeout} s")
            raise SourceError(self._error or str(exc)) from exc
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open video {self.location}: {describe_error(exc)}") from exc
        with container:
            if not container.streams.video:
                raise SourceError(f"{self.location} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            time_base: Fraction | None = stream.time_base
            rate = stream.average_rate or stream.guessed_rate
            frame_period = 1.0 / float(rate) if rate else 1.0 / 30.0
            start_wall = time.monotonic()
            first_pts: int | None = None
            index = 0
            try:
                for decoded in container.decode(stream):
                    if self.stopping or (self.max_frames is not None and index >= self.max_frames):
                        return
                    if self.pace:
                        # Release each frame at its presentation time relative to the first.
                        if decoded.pts is not None and time_base is not None:
                            first_pts = decoded.pts if first_pts is None else first_pts
                            offset = float((decoded.pts - first_pts) * time_base)
                        else:
                            offset = index * frame_period
                        delay = start_wall + offset - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                    if self.pace:  # live: converted to RGB only if taken (FrameSlot.get)
                        yield PendingFrame(
                            convert=functools.partial(decoded.to_ndarray, format="rgb24"),
                            index=index,
                            pts=decoded.pts,
                            time_base=time_base,
                            capture_time=time.time(),
                        )
                    else:
                        yield VideoFrame(
                            image=decoded.to_ndarray(format="rgb24"),
                            index=index,
                            pts=decoded.pts,
                            time_base=time_base,
                            capture_time=time.time(),
                        )
                    index += 1
            except av.error.ExitError as exc:  # the read timeout fired
                if self.stopping:
                    return
                self._stalled(f"no data from {self.name} for {self.read_timeout} s")
                raise SourceError(self._error or str(exc)) from exc
            except av.error.FFmpegError as exc:
                raise SourceError(
                    f"cannot decode {self.location} at frame {index}: {describe_error(exc)}"
                ) from exc
        if index == 0:
            raise SourceError(f"{self.location} holds no decodable frames")

    def _stalled(self, reason: str) -> None:
        """Report STALLED with `reason` (the caller then fails the source: files do not
        reconnect)."""
        logger.warning("source %s: %s", self.name, reason)
        self._set_state(SourceState.STALLED, reason)
        self._error = reason


def is_url(location: str) -> bool:
    """True for the network URLs a file source opens through FFmpeg (not local paths)."""
    return location.startswith(_URL_SCHEMES)


# FFmpeg's error classes (PyAV names), said in words a user can act on.
_FFMPEG_ERRORS = {
    "InvalidDataError": "the file is not a video FFmpeg can read (corrupt or another format)",
    "EOFError": "the file ends before its first frame (truncated?)",
    "PermissionError": "permission denied",
    "FileNotFoundError": "no such file",
    "HTTPNotFoundError": "the server has no such video (404)",
    "ConnectionRefusedError": "the connection was refused",
}


def describe_error(exc: BaseException) -> str:
    """An FFmpeg/OS error in words, FFmpeg's own text and code kept at the end.

    `[Errno 1094995529] Invalid data found when processing input: 'x.mp4'` becomes
    `the file is not a video FFmpeg can read (corrupt or another format) (FFmpeg: Invalid data
    found when processing input, code 1094995529)`.
    """
    words = _FFMPEG_ERRORS.get(type(exc).__name__)
    detail = getattr(exc, "strerror", None) or str(exc)
    code = getattr(exc, "errno", None)
    detail = f"{detail}, code {code}" if code is not None else detail
    return f"{words} (FFmpeg: {detail})" if words else detail
