"""Frame sources: a decode thread per source feeding a bounded `FrameSlot` (slot.py).

A `FrameSource` has a lifecycle (`SourceState`, with its allowed transitions), decodes on its
own thread, and always closes its slot in `finally`. `PushSource` is the one fed from outside
(WebRTC / WHIP frames).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from streamer.ingest.credentials import redact_credentials
from streamer.ingest.slot import (
    BackPressure,
    DecodeBudget,
    FrameSlot,
    PendingFrame,
    SlotClosedError,
    VideoFrame,
)

logger = logging.getLogger(__name__)


class SourceState(enum.Enum):
    """Lifecycle of a frame source."""

    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"  # no data within the read/open timeout; then reconnects or fails
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"  # ended: end of file, or stop() was called
    FAILED = "failed"  # ended on an error; `error` says which

    @property
    def ended(self) -> bool:
        """True for the final states, STOPPED and FAILED."""
        return self in (SourceState.STOPPED, SourceState.FAILED)


_ALLOWED_TRANSITIONS: dict[SourceState, frozenset[SourceState]] = {
    SourceState.STARTING: frozenset(
        {
            SourceState.RUNNING,
            SourceState.STALLED,
            SourceState.RECONNECTING,
            SourceState.STOPPED,
            SourceState.FAILED,
        }
    ),
    SourceState.RUNNING: frozenset(
        {SourceState.STALLED, SourceState.RECONNECTING, SourceState.STOPPED, SourceState.FAILED}
    ),
    SourceState.STALLED: frozenset(
        {SourceState.RUNNING, SourceState.RECONNECTING, SourceState.STOPPED, SourceState.FAILED}
    ),
    SourceState.RECONNECTING: frozenset(
        {SourceState.RUNNING, SourceState.STALLED, SourceState.STOPPED, SourceState.FAILED}
    ),
    SourceState.STOPPED: frozenset(),
    SourceState.FAILED: frozenset(),
}


class InvalidTransitionError(RuntimeError):
    """A state change that the source lifecycle does not allow."""


class SourceError(RuntimeError):
    """A source that cannot produce frames (missing file, bad URL, no device...).

    Subclasses raise it from `_frames()`; the source then ends FAILED with this message.
    """


@dataclass(frozen=True)
class SourceStats:
    """Counters of a source (cumulative since start)."""

    state: SourceState
    captured: int
    dropped: int
    taken: int
    queue_depth: int
    error: str | None


class FrameSource:
    """A source of `VideoFrame`s with a decode thread feeding `self.slot`.

    Subclasses implement `_frames()` (a generator run on the decode thread; it should check
    `self.stopping` between frames and may call `self._set_state(SourceState.RECONNECTING)` /
    `RUNNING` around reconnects). The first frame moves STARTING -> RUNNING; a normal end
    -> STOPPED; an exception -> FAILED with `error` set. The slot is always closed at the end.

    name: a label for logs and metrics. policy: the slot's back-pressure.
    """

    # `stop()` waits at most this long for the decode thread (a blocked network read ends
    # by itself within the source's read timeout).
    join_timeout: float = 1.0

    def __init__(
        self,
        *,
        name: str,
        policy: BackPressure,
        capacity: int = 4,
        budget: DecodeBudget | None = None,
    ) -> None:
        self.name = name
        self.slot = FrameSlot(policy, capacity=capacity, budget=budget)
        self._state = SourceState.STARTING
        self._state_lock = threading.Lock()
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def state(self) -> SourceState:
        """The source's lifecycle state."""
        return self._state

    @property
    def error(self) -> str | None:
        """Message of the error that ended (or is retrying) the source, else None."""
        return self._error

    @property
    def policy(self) -> BackPressure:
        """The slot's back-pressure policy."""
        return self.slot.policy

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called: `_frames()` should return soon."""
        return self._stop.is_set()

    def _set_state(self, new: SourceState, error: str | None = None) -> None:
        with self._state_lock:
            if new is self._state:
                return
            if new not in _ALLOWED_TRANSITIONS[self._state]:
                raise InvalidTransitionError(f"{self.name}: {self._state.name} -> {new.name}")
            logger.debug("source %s: %s -> %s", self.name, self._state.name, new.name)
            self._state = new
            if error is not None:
                self._error = redact_credentials(error)

    def _end(self, state: SourceState, error: str | None = None) -> None:
        """Move to a final state unless already ended."""
        with self._state_lock:
            if self._state.ended:
                return
            self._state = state
            if error is not None:
                self._error = redact_credentials(error)

    def start(self) -> None:
        """Start the decode thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"source {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the decode thread to end, close the slot, and join the thread (bounded)."""
        self._stop.set()
        self.slot.close()  # wakes a producer blocked on a full EVERY_FRAME slot
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            timeout = self.join_timeout if timeout is None else timeout
            thread.join(timeout)
            if thread.is_alive() and timeout > 0:
                logger.warning("source %s: decode thread did not stop in time", self.name)
        self._end(SourceState.STOPPED)

    def _run(self) -> None:
        try:
            for frame in self._frames():
                if self._stop.is_set():
                    break
                if self._state is not SourceState.RUNNING:
                    self._set_state(SourceState.RUNNING)
                self._put(frame)
            self._end(SourceState.STOPPED)
        except SlotClosedError:
            self._end(SourceState.STOPPED)
        except Exception as exc:  # noqa: BLE001 - any decode error ends this source only
            message = redact_credentials(str(exc) or type(exc).__name__)
            logger.warning("source %s failed: %s", self.name, message)
            self._end(SourceState.FAILED, message)
        finally:
            self.slot.close()

    def _put(self, frame: VideoFrame | PendingFrame) -> None:
        # EVERY_FRAME blocks; wake up now and then to notice stop().
        while not self.slot.put(frame, timeout=0.5):
            if self._stop.is_set():
                raise SlotClosedError("stopped")

    def _frames(self) -> Iterator[VideoFrame | PendingFrame]:
        """Yield frames in order (runs on the decode thread)."""
        raise NotImplementedError

    # --- observation -----------------------------------------------------------------------

    @property
    def stats(self) -> SourceStats:
        """A consistent-enough snapshot of the state and the slot's counters."""
        return SourceStats(
            state=self._state,
            captured=self.slot.captured,
            dropped=self.slot.dropped,
            taken=self.slot.taken,
            queue_depth=len(self.slot),
            error=self._error,
        )


class PushSource(FrameSource):
    """A source fed from outside (e.g. the WebRTC receiver): no thread of its own.

    The receiver calls `push(image_or_frame)` for each frame and `finish(error=None)` when the
    peer goes away. Live policy by default: the newest frame wins.
    """

    def __init__(
        self, *, name: str = "push", policy: BackPressure = BackPressure.LATEST_FRAME
    ) -> None:
        super().__init__(name=name, policy=policy)
        self._next_index = 0

    def start(self) -> None:
        """Nothing to start: frames arrive through `push`."""

    def push(
        self,
        frame: VideoFrame | np.ndarray,
        *,
        pts: int | None = None,
        time_base: Fraction | None = None,
    ) -> bool:
        """Hand over one frame ((H, W, 3) uint8 RGB or a `VideoFrame`); never blocks for long.

        Returns False when the source has ended (the caller should stop pushing).
        """
        if self._state.ended or self.slot.closed:
            return False
        if not isinstance(frame, VideoFrame):
            frame = VideoFrame(
                image=frame,
                index=self._next_index,
                pts=pts,
                time_base=time_base,
                capture_time=time.time(),
            )
        self._next_index = frame.index + 1
        if self._state is SourceState.STARTING:
            self._set_state(SourceState.RUNNING)
        try:
            # LATEST_FRAME never waits; EVERY_FRAME waits briefly so a push source cannot
            # wedge the caller's event loop thread.
            return self.slot.put(frame, timeout=0.1)
        except SlotClosedError:
            return False

    def finish(self, error: str | None = None) -> None:
        """The producer is done: STOPPED, or FAILED with `error`; closes the slot."""
        self._end(SourceState.FAILED if error else SourceState.STOPPED, error)
        self.slot.close()

    def stop(self, timeout: float | None = None) -> None:
        """End the source (STOPPED) and close its slot; there is no thread to join."""
        self._stop.set()
        self.finish()
