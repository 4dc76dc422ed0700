"""Frames and the bounded slot between a source's decode thread and its consumer.

Thread boundary: a `FrameSource` (base.py) decodes on its own thread and `put`s `VideoFrame`s
into its `FrameSlot`; the device's `DeviceScheduler` `get`s them. The slot's `BackPressure`
policy says what happens when the consumer is slower than the producer:

- `EVERY_FRAME` (batch): the producer blocks, no frame is lost.
- `LATEST_FRAME` (live): one slot, a newer frame replaces an unconsumed one, the drop is counted.
  Live sources put `PendingFrame`s, still in the codec's pixel format: the slot converts a
  frame to RGB only when the consumer takes it, so dropped frames cost no conversion.

The decode thread always closes the slot in `finally`, so a consumer never waits for a source
that has died: `get` returns `END_OF_STREAM` once the slot is closed and drained.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame.

    image: (H, W, 3) uint8 RGB. index: frame number in the source (0-based, counts every
    decoded frame, so gaps show dropped frames). pts / time_base: the container's timestamp
    (seconds = pts * time_base), None when the source has none. capture_time: wall clock
    (`time.time()`) when the frame was decoded or received.
    """

    image: np.ndarray
    index: int
    pts: int | None = None
    time_base: Fraction | None = None
    capture_time: float = 0.0


@dataclass(frozen=True)
class PendingFrame:
    """A decoded frame not yet converted to RGB (live sources; see `FrameSlot.get`).

    convert: makes the (H, W, 3) uint8 RGB image, e.g. PyAV's
    `functools.partial(decoded.to_ndarray, format="rgb24")`. The other fields are
    `VideoFrame`'s.
    """

    convert: Callable[[], np.ndarray]
    index: int
    pts: int | None = None
    time_base: Fraction | None = None
    capture_time: float = 0.0

    def to_video_frame(self) -> VideoFrame:
        """Convert now (on the calling thread) into a `VideoFrame`."""
        return VideoFrame(
            image=self.convert(),
            index=self.index,
            pts=self.pts,
            time_base=self.time_base,
            capture_time=self.capture_time,
        )


class _EndOfStream:
    """Type of the `END_OF_STREAM` sentinel (compare with `is`)."""

    def __repr__(self) -> str:
        return "END_OF_STREAM"


END_OF_STREAM = _EndOfStream()
"""Returned by `FrameSlot.get` once the slot is closed and holds no more frames."""


class BackPressure(enum.Enum):
    """What a full `FrameSlot` does with a new frame."""

    EVERY_FRAME = "every_frame"  # batch: block the producer, drop nothing
    LATEST_FRAME = "latest_frame"  # live: keep only the newest frame, count the drop


class DecodeBudget:
    """Bytes of decoded frames that `EVERY_FRAME` slots may hold ahead of their consumers,
    shared by all of them (a service's sessions). A slot's first frame is always free, so
    every source makes progress; each further frame waits until the budget has room.
    Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._used = 0
        self._lock = threading.Lock()

    def try_take(self, nbytes: int) -> bool:
        """Take `nbytes` if the budget has room; False (nothing taken) if not."""
        with self._lock:
            if self._used + nbytes > self.max_bytes:
                return False
            self._used += nbytes
            return True

    def give(self, nbytes: int) -> None:
        """Return `nbytes` taken earlier (never below zero in use)."""
        with self._lock:
            self._used = max(0, self._used - nbytes)

    @property
    def used(self) -> int:
        """Bytes taken now."""
        return self._used


# How often a producer waiting on the shared budget looks again (other slots free it).
_BUDGET_POLL_S = 0.05


class SlotClosedError(RuntimeError):
    """`put` on a slot that was closed (the consumer went away or the stream ended)."""


class FrameSlot:
    """Thread-safe bounded frame buffer with a back-pressure policy.

    capacity: frames held at most for `EVERY_FRAME` (LATEST_FRAME always holds one).
    budget: a `DecodeBudget` shared with other slots that frames beyond the first take bytes
        from (`EVERY_FRAME` only; None: only `capacity` bounds the slot).
    Counters: `captured` (frames put), `dropped` (frames replaced before being taken),
    `taken` (frames returned by `get`).
    """

    def __init__(
        self, policy: BackPressure, *, capacity: int = 4, budget: DecodeBudget | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.policy = policy
        self.capacity = 1 if policy is BackPressure.LATEST_FRAME else capacity
        self.budget = budget if policy is BackPressure.EVERY_FRAME else None
        self._frames: deque[VideoFrame | PendingFrame] = deque()
        self._charges: deque[int] = deque()  # bytes each held frame took from the budget
        self._cond = threading.Condition()
        self._closed = False
        self.captured = 0
        self.dropped = 0
        self.taken = 0
        # Optional wake-up hook for a consumer serving many slots (called outside the lock).
        self._listeners: list[threading.Event] = []

    def add_listener(self, event: threading.Event) -> None:
        """Set `event` whenever a frame arrives or the slot closes (multi-slot consumers)."""
        with self._cond:
            self._listeners.append(event)
        if self.ready():
            event.set()

    def remove_listener(self, event: threading.Event) -> None:
        """Stop setting `event` (no-op if it was not added)."""
        with self._cond:
            if event in self._listeners:
                self._listeners.remove(event)

    def put(self, frame: VideoFrame | PendingFrame, timeout: float | None = None) -> bool:
        """Offer a frame; returns False if it timed out waiting for room (EVERY_FRAME only).
        A `PendingFrame` is converted to RGB by `get`, so only frames taken are converted.

        Raises SlotClosedError when the slot was closed.
        """
        with self._cond:
            if self._closed:
                raise SlotClosedError("frame slot is closed")
            charge = 0
            if self.policy is BackPressure.LATEST_FRAME:
                if self._frames:
                    self._frames.popleft()
                    self._charges.popleft()
                    self.dropped += 1
            else:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._closed:
                    if len(self._frames) < self.capacity:
                        if not self._frames or self.budget is None:
                            break
                        # A PendingFrame's size is unknown until converted: it goes free.
                        nbytes = frame.image.nbytes if isinstance(frame, VideoFrame) else 0
                        if self.budget.try_take(nbytes):
                            charge = nbytes
                            break
                        wait = _BUDGET_POLL_S  # the budget is full: other slots free it
                    else:
                        wait = None
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    if wait is not None:
                        remaining = wait if remaining is None else min(wait, remaining)
                    self._cond.wait(remaining)
                if self._closed:
                    if charge and self.budget is not None:
                        self.budget.give(charge)
                    raise SlotClosedError("frame slot is closed")
            self._frames.append(frame)
            self._charges.append(charge)
            self.captured += 1
            self._cond.notify_all()
            listeners = list(self._listeners)
        for event in listeners:
            event.set()
        return True

    def get(self, timeout: float | None = None) -> VideoFrame | _EndOfStream | None:
        """Take the oldest frame; `END_OF_STREAM` once closed and empty; None on timeout.

        A `PendingFrame` is converted here, on the consumer's thread and outside the lock; one
        that fails to convert is counted in `dropped` (not `taken`) and the next frame is waited
        for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            frame = self._take(remaining)
            if not isinstance(frame, PendingFrame):
                return frame
            try:
                return frame.to_video_frame()
            except Exception as exc:  # noqa: BLE001 - one bad picture must not stop the consumer
                logger.warning("frame %d could not be converted to RGB: %s", frame.index, exc)
                with self._cond:
                    self.taken -= 1
                    self.dropped += 1

    def _take(self, timeout: float | None) -> VideoFrame | PendingFrame | _EndOfStream | None:
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._frames and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if not self._frames:
                return END_OF_STREAM
            frame = self._frames.popleft()
            charge = self._charges.popleft()
            if self._charges and self._charges[0]:
                # The next frame becomes the slot's first, which is free.
                charge += self._charges[0]
                self._charges[0] = 0
            if charge and self.budget is not None:
                self.budget.give(charge)
            self.taken += 1
            self._cond.notify_all()
            return frame

    def get_nowait(self) -> VideoFrame | _EndOfStream | None:
        """`get` without waiting: a frame, `END_OF_STREAM`, or None when nothing is ready."""
        return self.get(timeout=0)

    def ready(self) -> bool:
        """True when `get` would not block (a frame is waiting or the slot is closed)."""
        with self._cond:
            return bool(self._frames) or self._closed

    def close(self) -> None:
        """Mark end of stream: wakes blocked producers (they raise) and consumers."""
        with self._cond:
            self._closed = True
            if self.budget is not None:  # what is left is no longer decoding ahead
                self.budget.give(sum(self._charges))
                self._charges = deque(0 for _ in self._charges)
            self._cond.notify_all()
            listeners = list(self._listeners)
        for event in listeners:
            event.set()

    @property
    def closed(self) -> bool:
        """True once `close()` was called (frames may still be waiting)."""
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)
