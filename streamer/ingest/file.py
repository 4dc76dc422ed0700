"""`FileSource`: frames of a video file or URL decoded with PyAV."""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.ingest.base import FrameSource, SourceError, SourceState
from streamer.ingest.credentials import redact_credentials, redact_url
from streamer.ingest.limits import FrameLimits, FrameTooLargeError
from streamer.ingest.orientation import upright_rgb
from streamer.ingest.slot import BackPressure, DecodeBudget, PendingFrame, VideoFrame

if TYPE_CHECKING:
    from av.container import InputContainer

logger = logging.getLogger(__name__)

_URL_SCHEMES = (
    "http://", "https://", "rtmp://", "rtmps://", "srt://", "udp://", "tcp://", "rtp://", "file:",
)  # fmt: skip

# Local files are opened with FFmpeg's `file` protocol only, and only by demuxers that read one
# file: playlists (hls, dash), concat lists and the like would open other files or URLs (a
# `file:///elsewhere` or `../../x` segment escapes `media_root`).
LOCAL_PROTOCOLS = "file"
LOCAL_DEMUXERS = ",".join((
    "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "flv", "mpegts", "mpeg", "h264", "hevc",
    "m4v", "mjpeg", "ivf", "obu", "image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe",
    "tiff_pipe", "gif", "yuv4mpegpipe", "ogg", "asf", "nut", "mxf", "dv",
))  # fmt: skip


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

    frame_limits: frames above it are refused from the header at open, then per frame
        (`FrameTooLargeError`), before they are converted (default: `FrameLimits()`).
    budget: a `DecodeBudget` shared by the service's sources: batch frames decoded ahead of
        the consumer beyond the first take bytes from it (None: 4 frames ahead at most).

    A missing, unreadable or corrupt file ends the source FAILED with `error` saying why.
    Frames are turned upright by the stream's rotation metadata, as a player shows them.
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
        frame_limits: FrameLimits | None = None,
        budget: DecodeBudget | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.location = str(path_or_url)
        self.pace = pace
        self.max_frames = max_frames
        self.frame_limits = frame_limits or FrameLimits()
        self.shown = redact_url(self.location)  # for messages: no credentials
        policy = BackPressure.LATEST_FRAME if pace else BackPressure.EVERY_FRAME
        shown_name = name or Path(self.shown).name or self.shown
        super().__init__(name=shown_name, policy=policy, budget=budget)

    def _frames(self) -> Iterator[VideoFrame | PendingFrame]:
        import av  # lazily: importing the service must not need FFmpeg

        container = open_video(
            self.location, self.frame_limits, timeouts=(self.open_timeout, self.read_timeout),
            on_timeout=lambda: self._stalled(
                f"no answer from {self.name} within {self.open_timeout} s"
            ),
        )  # fmt: skip
        with container:
            stream = container.streams.video[0]
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
                    self.frame_limits.check(decoded.width, decoded.height, what=self.shown)
                    if self.pace:  # live: converted to RGB only if taken (FrameSlot.get)
                        yield PendingFrame(
                            convert=functools.partial(upright_rgb, decoded),
                            index=index,
                            pts=decoded.pts,
                            time_base=time_base,
                            capture_time=time.time(),
                        )
                    else:
                        yield VideoFrame(
                            image=upright_rgb(decoded),
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
            except av.error.ArgumentError as exc:  # the decoder's max_pixels refused a frame
                raise FrameTooLargeError(self.frame_limits.decode_refusal(self.shown)) from exc
            except av.error.FFmpegError as exc:
                raise SourceError(
                    redact_credentials(
                        f"cannot decode {self.shown} at frame {index}: {describe_error(exc)}"
                    )
                ) from exc
        if index == 0:
            raise SourceError(
                f"{self.shown} holds no decodable frames (corrupt, or its header does not "
                "match its data)"
            )

    def _stalled(self, reason: str) -> None:
        """Report STALLED with `reason` (the caller then fails the source: files do not
        reconnect)."""
        logger.warning("source %s: %s", self.name, reason)
        self._set_state(SourceState.STALLED, reason)
        self._error = reason


def open_video(
    location: str,
    limits: FrameLimits,
    *,
    timeouts: tuple[float | None, float | None] = (None, None),
    on_timeout: Callable[[], None] | None = None,
) -> InputContainer:
    """Open `location` with PyAV for decoding its first video stream, refusing what the
    header says is too large (`FrameTooLargeError`) and, for local files, anything but a
    single-file demuxer read through the `file` protocol. Returns the open container (the
    caller closes it); raises SourceError with the cause in words, credentials redacted.

    timeouts: (open, read) seconds for URLs (None: wait forever). on_timeout: called when
    the open timeout fired, before the SourceError is raised.
    """
    import av

    shown = redact_url(location)
    url = location.startswith(_URL_SCHEMES)
    if not url and not Path(location).is_file():
        raise SourceError(f"video file not found: {shown}")
    timeout = timeouts if url and any(t for t in timeouts) else None
    container_options: dict[str, str] = {}
    if not url or location.startswith("file:"):
        container_options = {
            "protocol_whitelist": LOCAL_PROTOCOLS,
            "format_whitelist": LOCAL_DEMUXERS,
        }
    try:
        container = av.open(
            location,
            container_options=container_options,
            # PyAV takes one options dict per stream (its stub says list[str]).
            stream_options=[limits.decoder_options()],  # type: ignore[list-item]
            timeout=timeout,
        )
    except av.error.ExitError as exc:  # the open timeout fired
        if on_timeout is not None:
            on_timeout()
        raise SourceError(f"no answer from {shown} within {timeouts[0]} s") from exc
    except av.error.ArgumentError as exc:
        if container_options:
            raise SourceError(
                f"cannot open video {shown}: its format is not one the server reads from a "
                "file (playlists, concat lists and other multi-file formats are refused)"
            ) from exc
        raise SourceError(redact_credentials(f"cannot open video {shown}: {exc}")) from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(
            redact_credentials(f"cannot open video {shown}: {describe_error(exc)}")
        ) from exc
    try:
        if not container.streams.video:
            raise SourceError(f"{shown} has no video stream")
        stream = container.streams.video[0]
        limits.check(stream.codec_context.width, stream.codec_context.height, what=shown)
        stream.codec_context.options = limits.decoder_options()
        stream.thread_type = "AUTO"
    except BaseException:
        container.close()
        raise
    return container


def probe_video(location: str, limits: FrameLimits) -> None:
    """Open and close `location` (a local file): raises what `open_video` raises, so a
    session creation refuses an oversized or disallowed file at once (cheap: the decoder's
    pixel cap keeps FFmpeg's probe from decoding a huge frame; a header without the size
    costs one decoded frame, within the cap)."""
    import av

    with open_video(location, limits) as container:
        stream = container.streams.video[0]
        if stream.codec_context.width and stream.codec_context.height:
            return
        # The header hides the size (image pipes): decode one frame, which the decoder's
        # pixel cap refuses before allocating it when it is too large.
        try:
            next(iter(container.decode(stream)), None)
        except av.error.ArgumentError as exc:
            raise FrameTooLargeError(limits.decode_refusal(redact_url(location))) from exc
        except av.error.FFmpegError as exc:
            raise SourceError(
                redact_credentials(f"cannot decode {redact_url(location)}: {describe_error(exc)}")
            ) from exc


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
    if words is None and getattr(exc, "errno", None) == errno.EBUSY:
        # What FFmpeg's demuxers return for a header they cannot use (a y4m of 0x0...).
        words = "the file's header is invalid or does not match its data"
    detail = getattr(exc, "strerror", None) or str(exc)
    code = getattr(exc, "errno", None)
    detail = f"{detail}, code {code}" if code is not None else detail
    return f"{words} (FFmpeg: {detail})" if words else detail
