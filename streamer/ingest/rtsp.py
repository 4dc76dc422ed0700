"""Live sources decoded with PyAV that reconnect on their own: `RtspSource` (and the camera).

A live source is latest-frame-wins: a consumer slower than the stream sees only the newest
frame, and the frames it missed are counted as dropped. When the stream ends or breaks (server
restarted, network cut), the source goes RECONNECTING and reopens it with exponential backoff;
the `FrameSource` object, its slot and whatever consumes it (e.g. a tracking session) stay the
same, so the consumer just sees frames again once the stream is back.

    source = RtspSource("rtsp://camera.local/stream")
    source.start()
    frame = source.slot.get(timeout=1.0)   # VideoFrame, None (nothing yet) or END_OF_STREAM
    source.state, source.reconnects, source.captured, source.dropped
    source.stop()
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from streamer.ingest.base import FrameSource, SourceError, SourceState
from streamer.ingest.credentials import redact_credentials, redact_url
from streamer.ingest.limits import FrameLimits, FrameTooLargeError
from streamer.ingest.orientation import upright_rgb
from streamer.ingest.slot import BackPressure, PendingFrame, VideoFrame

__all__ = ["Backoff", "ReconnectingSource", "RtspSource", "redact_url"]

logger = logging.getLogger(__name__)

# FFmpeg demuxer options for low latency: TCP interleaving (no UDP loss or firewall trouble), a
# socket I/O timeout in microseconds (bounds every blocking read, so `stop()` and a dead server
# are noticed quickly), and no stream probing before the first frame (the SDP describes it).
LOW_LATENCY_RTSP_OPTIONS: Mapping[str, str] = {
    "rtsp_transport": "tcp",
    "timeout": "2000000",
    "analyzeduration": "0",
    "probesize": "32",
}


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts: initial, initial * factor, ... capped at maximum.

    The delay grows while attempts keep failing and starts over at `initial` once a connection
    has delivered a frame.
    """

    initial: float = 0.5
    maximum: float = 8.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1:
            raise ValueError(
                "backoff needs 0 < initial <= maximum and factor >= 1, got "
                f"initial={self.initial}, maximum={self.maximum}, factor={self.factor}"
            )

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` (>= 1) consecutive failed attempts."""
        return min(self.maximum, self.initial * self.factor ** max(0, failures - 1))


class ReconnectingSource(FrameSource):
    """A live PyAV source that reopens its input when it ends or fails (base of RTSP, camera).

    Subclasses implement `_open()`, returning an opened `av` input container. Failing opens and
    broken or ended streams move the source to RECONNECTING (with `error` saying why) and are
    retried after `backoff.delay(n)`; the first decoded frame after that moves it back to
    RUNNING. `max_attempts` consecutive failed connections end it FAILED (None: retry forever,
    the right default for cameras and servers that come back). A `SourceError` raised by
    `_open()` is final: the source ends FAILED at once (e.g. a device that does not exist).

    Counters: `captured` / `dropped` (the slot's), `reconnects` (times the stream came back
    after a loss), `reconnect_attempts` (opens tried after a loss), `decode_errors` (corrupt
    packets skipped without reconnecting).
    `VideoFrame.index` counts every decoded frame across reconnections; `pts` are the input's
    own timestamps and start over with each connection (None until the stream has timing).
    """

    read_timeout: float | None = None  # seconds without data before STALLED (subclasses)
    # Frames above it end the source FAILED (`FrameTooLargeError`; a live source is not
    # downscaled: the decoder refuses the frame before allocating it).
    frame_limits: FrameLimits = FrameLimits()

    def __init__(
        self,
        *,
        name: str,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {max_attempts}")
        super().__init__(name=name, policy=BackPressure.LATEST_FRAME)
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.reconnects = 0
        self.reconnect_attempts = 0
        self.decode_errors = 0
        self._connected_once = False

    @property
    def captured(self) -> int:
        """Frames decoded and put into the slot, across reconnections."""
        return self.slot.captured

    @property
    def dropped(self) -> int:
        """Frames replaced in the slot before the consumer took them."""
        return self.slot.dropped

    def _open(self) -> Any:
        """Open the input and return the `av` container (runs on the decode thread)."""
        raise NotImplementedError

    def _frames(self) -> Iterator[VideoFrame | PendingFrame]:
        import av  # lazily: importing the service must not need FFmpeg

        index = 0
        failures = 0  # consecutive connections that delivered no frame
        lost = False  # a connection was lost or failed: the next one is a reconnection
        while not self.stopping:
            if lost:
                self.reconnect_attempts += 1
            delivered = 0
            try:
                container = self._open()
            except av.error.FFmpegError as exc:
                reason = redact_credentials(f"cannot open {self.name}: {exc}")
            else:
                with container:
                    if not container.streams.video:
                        raise SourceError(f"{self.name} has no video stream")
                    stream = container.streams.video[0]
                    limits = self.frame_limits
                    context = stream.codec_context
                    limits.check(context.width, context.height, what=self.name)
                    context.options = limits.decoder_options()
                    time_base: Fraction | None = stream.time_base
                    try:
                        for decoded in self._decode(container, stream):
                            if self.stopping:
                                return
                            if delivered == 0:
                                self._on_connected(lost)
                                lost = False
                            limits.check(decoded.width, decoded.height, what=self.name)
                            # Converted to RGB only if the consumer takes it (FrameSlot.get).
                            yield PendingFrame(
                                convert=functools.partial(upright_rgb, decoded),
                                index=index,
                                pts=decoded.pts,
                                time_base=time_base,
                                capture_time=time.time(),
                            )
                            index += 1
                            delivered += 1
                        reason = f"{self.name}: stream ended"
                    except av.error.ExitError:  # the read timeout fired: no data
                        reason = f"{self.name}: stalled, no data for {self.read_timeout} s"
                        if not self.stopping:
                            self._set_state(SourceState.STALLED, reason)
                    except av.error.ArgumentError as exc:  # the decoder's pixel cap
                        raise FrameTooLargeError(limits.decode_refusal(self.name)) from exc
                    except av.error.FFmpegError as exc:
                        reason = redact_credentials(f"{self.name}: stream broke: {exc}")
            if self.stopping:
                return
            lost = True
            failures = 0 if delivered else failures + 1
            if self.max_attempts is not None and failures >= self.max_attempts:
                raise SourceError(f"{reason} (gave up after {failures} attempts)")
            delay = self.backoff.delay(max(failures, 1))
            logger.info("%s; reconnecting in %.1f s", reason, delay)
            self._set_state(SourceState.RECONNECTING, reason)
            self._error = reason  # _set_state keeps the first reason while already reconnecting
            if self._stop.wait(delay):
                return

    def _decode(self, container: Any, stream: Any) -> Iterator[Any]:
        """Decoded frames of `stream`; a corrupt packet is skipped, not a reason to reconnect."""
        import av

        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as exc:
                self.decode_errors += 1
                logger.debug("%s: skipped a corrupt packet: %s", self.name, exc)
                continue
            yield from frames
            if self.stopping:
                return

    def _on_connected(self, after_loss: bool) -> None:
        if after_loss:
            self.reconnects += 1
            logger.info("%s: stream is back (reconnection %d)", self.name, self.reconnects)
        self._connected_once = True
        self._error = None  # the stream recovered: the last failure no longer applies


class RtspSource(ReconnectingSource):
    """Frames of an RTSP stream (H.264/H.265/MJPEG... whatever FFmpeg decodes), live.

    url: `rtsp://` or `rtsps://` URL (credentials inline if needed).
    options: FFmpeg demuxer options merged over `LOW_LATENCY_RTSP_OPTIONS`.
    open_timeout / read_timeout: seconds PyAV waits for the connection, then for each read,
        before giving up on it (the stream is then reopened); they also bound how long
        `stop()` can take.
    backoff / max_attempts: see `ReconnectingSource`.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        options: Mapping[str, str] | None = None,
        open_timeout: float = 5.0,
        read_timeout: float = 2.0,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
    ) -> None:
        if not url.startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"not an RTSP URL: {url!r}")
        if open_timeout <= 0 or read_timeout <= 0:
            raise ValueError("open_timeout and read_timeout must be positive")
        super().__init__(name=name or redact_url(url), backoff=backoff, max_attempts=max_attempts)
        self.url = url
        self.options = {**LOW_LATENCY_RTSP_OPTIONS, **(options or {})}
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout

    def _open(self) -> Any:
        import av

        return av.open(
            self.url,
            options=self.options,
            stream_options=[self.frame_limits.decoder_options()],  # type: ignore[list-item]
            timeout=(self.open_timeout, self.read_timeout),
        )
