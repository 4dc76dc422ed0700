"""`Subscriber`: one consumer of a session's messages, living on an asyncio event loop.

The `DeviceScheduler` (a thread) hands messages over with `offer()`, which hops onto the
subscriber's loop with `loop.call_soon_threadsafe`; the consumer awaits `get()`. Frame
messages are bounded per subscriber: for live sessions the oldest queued frame is dropped
(and counted) when the consumer falls behind; batch sessions are paused by the worker
instead (see `frames_in_flight`). Replies (`ack`, `error`) and `end` are never dropped, but
they are bounded too (`max_replies`, counting the client's prompts still waiting for the
worker): a consumer that lets them pile up has stopped reading, so the subscriber drops its
whole backlog and closes with `overflowed` set (`OverflowPolicy`); its transport then closes
the connection (websocket close code 4429).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections import deque
from collections.abc import Callable

from streamer.protocol import FrameMessage, ServerMessage
from streamer.settings import OutputOptions

logger = logging.getLogger(__name__)

# Websocket close code when a client's replies overflowed (it sends but does not read).
WS_CLOSE_BACKLOG = 4429


class OverflowPolicy(enum.Enum):
    """What a full subscriber queue does: the named policy of `Subscriber`."""

    # Frames: live sessions drop the oldest queued frame (counted in `dropped`); batch
    # sessions never drop, the worker waits. Replies/end: never dropped one by one; past
    # `max_replies` the subscriber closes (`overflowed`) and the client is disconnected.
    DROP_OLDEST_FRAME_THEN_DISCONNECT = "drop_oldest_frame_then_disconnect"


class Subscriber:
    """A queue of server messages for one consumer (a websocket, the WebRTC data channel...).

    loop: the event loop `get()` is awaited on. options: the output options the worker encodes
    frames with (replace with `set_options`, on any thread). max_pending: frame messages queued
    at most. drop_frames: True for live sessions (drop the oldest), False for batch (never drop;
    the worker waits). on_drain: called (on the loop) when a queued frame is taken, so a paused
    worker can go on.
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        options: OutputOptions,
        max_pending: int = 8,
        drop_frames: bool = True,
        on_drain: Callable[[], None] | None = None,
        name: str = "subscriber",
        max_replies: int = 64,
    ) -> None:
        self.loop = loop
        self.name = name
        self._options = options
        self.max_pending = max_pending
        self.drop_frames = drop_frames
        self._on_drain = on_drain
        self._queue: deque[ServerMessage] = deque()
        self._ready = asyncio.Event()  # only touched on `loop`
        self._lock = threading.Lock()
        self._in_flight = 0  # frame messages offered and not yet taken or dropped
        self._closing = False  # no new offers (set from any thread)
        self._closed = False  # closed on the loop: get() drains what is queued, then None
        self.dropped = 0  # frame messages dropped because the consumer was slow
        self.policy = OverflowPolicy.DROP_OLDEST_FRAME_THEN_DISCONNECT
        self.max_replies = max_replies
        self._replies_reserved = 0  # prompts submitted whose reply has not arrived yet
        self._replies_queued = 0  # non-frame messages in the queue
        self.overflowed = False  # closed because replies piled up (the client is not reading)
        self.on_overflow: Callable[[], None] | None = None  # called on the loop, once
        self.last_frame_time = 0.0  # monotonic time of the last frame offered (max_fps)

    # --- options ---------------------------------------------------------------------------

    @property
    def options(self) -> OutputOptions:
        """The output options its frames are encoded with."""
        return self._options

    def set_options(self, options: OutputOptions) -> None:
        """Use `options` from the next frame on (event loop)."""
        self._options = options  # an atomic swap of an immutable model

    # --- producer side (any thread) --------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closing began: nothing more is queued."""
        return self._closing or self._closed

    @property
    def frames_in_flight(self) -> int:
        """Frame messages offered but not yet taken by the consumer."""
        with self._lock:
            return self._in_flight

    def offer(self, message: ServerMessage, *, reply: bool = False) -> bool:
        """Queue a message from any thread; False when the subscriber or its loop is gone.
        reply: the message answers a prompt reserved with `reserve_reply`."""
        if self._closing or self._closed:
            return False
        is_frame = isinstance(message, FrameMessage)
        if is_frame:
            with self._lock:
                self._in_flight += 1
        try:
            self.loop.call_soon_threadsafe(self._append, message, reply)
        except RuntimeError:  # the loop was closed: nobody will read this
            self._closing = True
            return False
        return True

    # --- consumer side (the loop) ----------------------------------------------------------

    def put_nowait(self, message: ServerMessage) -> None:
        """Queue a message from the subscriber's own loop (e.g. an error reply)."""
        if isinstance(message, FrameMessage):
            with self._lock:
                self._in_flight += 1
        self._append(message)

    def reserve_reply(self) -> bool:
        """Count a prompt about to be submitted against the reply budget (on the loop).
        False, and the subscriber overflows and closes, when the budget is spent."""
        if self._closed:
            return False
        if self._replies_reserved + self._replies_queued >= self.max_replies:
            self._overflow()
            return False
        self._replies_reserved += 1
        return True

    def release_reply(self) -> None:
        """Give back a reservation whose prompt was not submitted after all."""
        self._replies_reserved = max(0, self._replies_reserved - 1)

    def _overflow(self) -> None:
        """The client stopped reading: drop the backlog, close, tell the transport."""
        if self._closed:
            return
        logger.warning(
            "%s: %d replies pending, the limit is %d: disconnecting a client that does not read",
            self.name, self._replies_reserved + self._replies_queued, self.max_replies,
        )  # fmt: skip
        self.overflowed = True
        backlog = list(self._queue)
        self._queue.clear()
        self._replies_queued = 0
        for queued in backlog:
            self._taken(queued)
        self.close()
        if self.on_overflow is not None:
            self.on_overflow()

    def _append(self, message: ServerMessage, reply: bool = False) -> None:
        if reply:
            self.release_reply()
        if self._closed:
            self._taken(message)
            return
        if not isinstance(message, FrameMessage):
            if self._replies_reserved + self._replies_queued >= self.max_replies:
                self._overflow()
                return
            self._replies_queued += 1
        self._queue.append(message)
        if self.drop_frames and isinstance(message, FrameMessage):
            frames = [m for m in self._queue if isinstance(m, FrameMessage)]
            if len(frames) > self.max_pending:
                self._queue.remove(frames[0])
                self.dropped += 1
                self._taken(frames[0])
        self._ready.set()

    def _taken(self, message: ServerMessage) -> None:
        if isinstance(message, FrameMessage):
            with self._lock:
                self._in_flight -= 1
            if self._on_drain is not None:
                self._on_drain()

    async def get(self, timeout: float | None = None) -> ServerMessage | None:
        """The next message; None once closed and empty, or after `timeout` seconds."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        message = self._queue.popleft()
        if not isinstance(message, FrameMessage):
            self._replies_queued -= 1
        self._taken(message)
        return message

    def close(self) -> None:
        """Stop accepting messages (call on the loop): `get()` returns what is already queued,
        then None."""
        self._closing = True
        self._closed = True
        self._ready.set()

    def close_threadsafe(self) -> None:
        """`close()` from any thread; messages offered before it are still delivered."""
        self._closing = True
        try:
            self.loop.call_soon_threadsafe(self.close)
        except RuntimeError:
            pass
