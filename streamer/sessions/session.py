"""A session: a frame source + a `StreamingSession` + subscribers (see `SessionManager`).

Threads: the source decodes on its own thread; the scheduler of the session's device drives its
`StreamingSession` (only that thread touches it); subscribers read results on the event loop.
Public entry points are safe to call from the event loop: they never run the model.

Lifecycle (`SessionState`): WAITING (created; with start="on_connect" frames are not consumed
until a first subscriber) -> RUNNING -> FINISHED (source ended, every frame processed) or
FAILED (source or inference error); any of them -> CLOSED (deleted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sam2_video import FrameResult, StreamingSession
from streamer.ingest import BackPressure, FrameSource, PushSource, SourceState, VideoFrame
from streamer.ingest import source_kind as classify_source
from streamer.ingest.credentials import redact_credentials, redact_url
from streamer.protocol import Ack, End, Error, ErrorCode, PromptMessage, ServerMessage
from streamer.sessions.capabilities import SessionTokens
from streamer.sessions.detection import SessionDetection
from streamer.sessions.errors import SessionEndedError
from streamer.sessions.fairness import TokenBucket
from streamer.sessions.prompts import is_expensive
from streamer.sessions.schemas import SessionCreate, SessionInfo
from streamer.sessions.stats import Histogram, RateMeter
from streamer.sessions.subscribers import Subscriber
from streamer.settings import OutputOptions, Settings

logger = logging.getLogger(__name__)


class SessionState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CLOSED = "closed"


_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.WAITING: frozenset(
        {SessionState.RUNNING, SessionState.FINISHED, SessionState.FAILED, SessionState.CLOSED}
    ),
    SessionState.RUNNING: frozenset(
        {SessionState.FINISHED, SessionState.FAILED, SessionState.CLOSED}
    ),
    SessionState.FINISHED: frozenset({SessionState.CLOSED}),
    SessionState.FAILED: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


@dataclass(frozen=True)
class TrackerView:
    """What the worker last published about a session's stream (readable from any thread)."""

    frame_idx: int = -1
    obj_ids: tuple[int, ...] = ()
    frame_hw: tuple[int, int] | None = None


@dataclass
class Command:
    """A client request waiting for the worker: the reply goes to `reply_to` and `future`."""

    message: PromptMessage
    reply_to: Subscriber | None
    future: concurrent.futures.Future


ResultListener = Callable[[VideoFrame, FrameResult], None]


def _rate_limited(message: PromptMessage, retry_after: float) -> Error:
    return Error(
        id=getattr(message, "id", None),
        code=ErrorCode.RATE_LIMITED,
        message=f"too many {message.type} requests; retry in {retry_after:.1f} s",
        retry_after=round(retry_after, 3),
    )


# --- session ---------------------------------------------------------------------------------


class Session:
    """One stream being tracked. Created by `SessionManager.create`.

    Attributes: `id`, `spec` (the source string, credentials redacted), `kind` ("file",
    "rtsp", "camera", "webrtc"),
    `source` (its `FrameSource`), `push_source` (the `PushSource` to feed, for "webrtc"),
    `stream` (the `StreamingSession`, scheduler thread only), `request`.

    Its 26 methods (9 of them read-only properties) are kept on one class on purpose: it is the
    one handle routes, schedulers and peers share, and its sections below (state, subscribers,
    requests, lifecycle, observation) all guard the same lock and state; a separate fan-out
    object would only add forwarding methods.
    """

    def __init__(
        self,
        *,
        session_id: str,
        request: SessionCreate,
        source: FrameSource,
        stream: StreamingSession,
        settings: Settings,
        wake_worker: Callable[[], None],
        device: str = "cpu:0",
        owner: str = "local",
        tokens: SessionTokens | None = None,
        client_commands: TokenBucket | None = None,
    ) -> None:
        self.id = session_id
        self.device = device  # label of the device whose scheduler serves it
        # Who created it (a client key: address or credential) and its capability tokens.
        self.owner = owner
        self.tokens = tokens or SessionTokens.mint()
        self.request = request
        self.spec = redact_url(request.source)  # shown in info, hello, logs: no credentials
        self.kind = classify_source(request.source)
        self.source = source
        # A waiting source decodes nothing: a paced file's "live" playback starts at frame 0
        # for its first viewer, and sessions nobody watches hold no decode thread or frames.
        self.defer_source = request.start == "on_connect" and not isinstance(source, PushSource)
        self.stream = stream  # the model-side state: frames, objects, memory
        self.settings = settings
        self.created_at = time.time()
        self._wake_worker = wake_worker
        self._lock = threading.Lock()
        self._state = SessionState.WAITING
        self._error: str | None = None
        self._subscribers: list[Subscriber] = []
        self._listeners: list[ResultListener] = []
        self._commands: deque[Command] = deque()
        self.view = TrackerView()
        # Detector seeding and the labels it gives objects (scheduler thread only).
        self.detection = SessionDetection(options=request.detect)
        # Counters (written by the worker thread).
        self.processed = 0
        self.inference = Histogram()
        self.end_to_end = Histogram()
        self.rates = RateMeter(("captured", "processed", "dropped"))
        # Device time charged to this session (its frames' share and its own commands).
        self.device_seconds = 0.0
        self.load = RateMeter(("device_us",))
        self.expensive_commands = TokenBucket(
            per_minute=settings.expensive_commands_per_minute,
            burst=settings.expensive_commands_burst,
        )
        # The owner's bucket, shared by all its sessions: many sessions do not multiply it.
        self.client_commands = client_commands

    # --- state -----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The session's lifecycle state."""
        return self._state

    @property
    def error(self) -> str | None:
        """Why the session failed, else None."""
        return self._error

    @property
    def push_source(self) -> PushSource | None:
        """The source to feed frames into, for sessions created with source="webrtc"."""
        return self.source if isinstance(self.source, PushSource) else None

    @property
    def live(self) -> bool:
        """True for latest-frame sources (frames may be dropped), False for batch files."""
        return self.source.policy is BackPressure.LATEST_FRAME

    def _transition(self, new: SessionState, error: str | None = None) -> bool:
        """Move to `new` if allowed; False (and no change) otherwise."""
        with self._lock:
            if new is self._state or new not in _TRANSITIONS[self._state]:
                return False
            self._state = new
            if error is not None:
                error = self._error = redact_credentials(error)
        logger.info("session %s: %s%s", self.id, new.value, f" ({error})" if error else "")
        return True

    @property
    def started(self) -> bool:
        """True once frames may be consumed (start="now", or a subscriber came)."""
        return self._state is not SessionState.WAITING or self.request.start == "now"

    # --- subscribers -----------------------------------------------------------------------

    def subscribe(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        options: OutputOptions | None = None,
        name: str = "subscriber",
    ) -> Subscriber:
        """Receive this session's messages (`frame`, `ack` to own requests, `end`) on `loop`
        (default: the running loop). Call `unsubscribe` when done. Joining a finished or
        failed session gives its `end` (with the error) at once."""
        if self._state is SessionState.CLOSED:
            raise SessionEndedError(f"session {self.id} is closed")
        subscriber = Subscriber(
            loop=loop or asyncio.get_running_loop(),
            options=options or self.settings.default_output,
            max_pending=self.settings.max_pending_messages,
            drop_frames=self.live,
            on_drain=self._wake_worker,
            name=name,
            max_replies=self.settings.max_pending_replies,
        )
        with self._lock:
            self._subscribers.append(subscriber)
            ended = self._state in (SessionState.FINISHED, SessionState.FAILED)
        if ended:
            # A late joiner learns at once how (and why) the session ended.
            subscriber.offer(End(state=self._state.value, error=self._error, frames=self.processed))
        self.start()
        return subscriber

    def start(self) -> None:
        """Let the worker consume frames now (a first subscriber or listener does it too)."""
        if self._state is SessionState.WAITING:
            self._transition(SessionState.RUNNING)
            if self.defer_source:
                self.source.start()
        self._wake_worker()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop delivering to `subscriber` (no-op if it was not subscribed)."""
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
        self._wake_worker()  # a batch session paused for this subscriber may go on

    @property
    def subscribers(self) -> list[Subscriber]:
        """The current subscribers (a copy)."""
        with self._lock:
            return list(self._subscribers)

    def add_result_listener(self, listener: ResultListener) -> None:
        """Call `listener(frame, result)` on the worker thread after each frame; it must be
        quick and must not block (e.g. hand the result to another thread or loop). Starts a
        waiting session, like `subscribe`."""
        with self._lock:
            self._listeners.append(listener)
        self.start()

    def remove_result_listener(self, listener: ResultListener) -> None:
        """Stop calling `listener` (no-op if it was not added)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def result_listeners(self) -> list[ResultListener]:
        """The current result listeners (a copy)."""
        with self._lock:
            return list(self._listeners)

    def broadcast(self, message: ServerMessage) -> None:
        """Offer `message` to every subscriber (any thread)."""
        for subscriber in self.subscribers:
            subscriber.offer(message)

    # --- requests --------------------------------------------------------------------------

    def submit(
        self, message: PromptMessage, *, reply_to: Subscriber | None = None
    ) -> concurrent.futures.Future:
        """Queue a prompt for the worker. The future resolves to an `Ack` or `Error` message,
        which is also offered to `reply_to`. Raises SessionEndedError on a closed/failed
        session."""
        if self._state in (SessionState.CLOSED, SessionState.FAILED):
            raise SessionEndedError(f"session {self.id} is {self._state.value}")
        future: concurrent.futures.Future = concurrent.futures.Future()
        command = Command(message, reply_to, future)
        if is_expensive(message):
            retry_after = self.expensive_commands.take()
            if retry_after <= 0 and self.client_commands is not None:
                retry_after = self.client_commands.take()
            if retry_after > 0:
                self.reply(command, _rate_limited(message, retry_after))
                return future
        with self._lock:
            self._commands.append(command)
        self._wake_worker()
        return future

    def take_commands(self) -> list[Command]:
        """Every queued command, oldest first (the queue is emptied)."""
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
        return commands

    def next_command(self) -> Command | None:
        """The oldest queued command, or None."""
        with self._lock:
            return self._commands.popleft() if self._commands else None

    def charge(self, seconds: float) -> None:
        """Scheduler: `seconds` of device time were spent for this session."""
        self.device_seconds += seconds
        self.load.sample((int(self.device_seconds * 1e6),))

    @property
    def measured_load(self) -> float | None:
        """Device seconds per second over the last few seconds; None before any work ran."""
        if self.device_seconds == 0.0:
            return None
        self.load.sample((int(self.device_seconds * 1e6),))
        return self.load.rates()["device_us"] / 1e6

    @staticmethod
    def reply(command: Command, message: Ack | Error) -> None:
        """Answer `command`: to its subscriber (as a reply, never dropped) and its future."""
        if command.reply_to is not None:
            command.reply_to.offer(message, reply=True)
        if not command.future.done():
            command.future.set_result(message)

    # --- lifecycle -------------------------------------------------------------------------

    def mark_running(self) -> None:
        """Move to RUNNING once frames flow (scheduler thread)."""
        self._transition(SessionState.RUNNING)

    def finish(self, state: SessionState, error: str | None = None) -> None:
        """Worker: the stream ended (FINISHED / FAILED); tells the subscribers."""
        if self._transition(state, error):
            self.broadcast(End(state=state.value, error=error, frames=self.processed))
        if state is SessionState.FAILED:
            self.source.stop(timeout=0)  # don't join on the worker thread

    def close(self) -> None:
        """Stop the source (joined, bounded), reject queued requests, and end subscribers."""
        was_ended = self._state in (SessionState.FINISHED, SessionState.FAILED)
        if not self._transition(SessionState.CLOSED):
            return
        self.source.stop()
        for command in self.take_commands():
            self.reply(
                command,
                Error(
                    id=getattr(command.message, "id", None),
                    code=ErrorCode.SESSION_ENDED,
                    message=f"session {self.id} was closed",
                ),
            )
        end = End(state="closed", frames=self.processed)
        stats = self.source.stats
        if stats.state is SourceState.FAILED:
            # Closed (e.g. by its WHIP publisher) before the worker saw its source fail: the
            # subscribers still learn why.
            end = End(state="failed", error=stats.error, frames=self.processed)
        for subscriber in self.subscribers:
            if not was_ended:
                subscriber.offer(end)
            subscriber.close_threadsafe()
        with self._lock:
            self._subscribers.clear()
            self._listeners.clear()
        self._wake_worker()

    # --- observation -----------------------------------------------------------------------

    def sample_rates(self) -> None:
        """Record the frame counters for the rates in `info()` (after each frame and each
        metrics scrape)."""
        s = self.source.stats
        self.rates.sample((s.captured, self.processed, s.dropped))

    def info(self) -> SessionInfo:
        """The session's public state for `GET /sessions/{id}`."""
        stats = self.source.stats
        view = self.view
        return SessionInfo(
            id=self.id,
            source=self.spec,
            kind=self.kind,
            state=self._state.value,
            error=self._error or stats.error,
            source_state=stats.state.value,
            back_pressure=self.source.policy.value,
            created_at=self.created_at,
            frame_idx=view.frame_idx,
            frame_size=list(view.frame_hw) if view.frame_hw else None,
            obj_ids=list(view.obj_ids),
            frames_captured=stats.captured,
            frames_processed=self.processed,
            frames_dropped=stats.dropped,
            queue_depth=stats.queue_depth,
            subscribers=len(self.subscribers),
            inference_latency_mean=self.inference.mean,
            device=self.device,
            device_seconds=round(self.device_seconds, 6),
        )
