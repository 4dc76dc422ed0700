"""`InferenceWorker`: the one thread per device that runs the model for every session.

Each pass visits the sessions round-robin: first the session's queued prompts (interactive, so
they go first), then at most one frame from its slot (the newest for live sources, the next
for batch ones). Results are encoded here and handed to subscribers, which hop onto their event
loop with `call_soon_threadsafe`; the event loop never runs the model. With nothing to do the
worker sleeps on `wake_event`, which sources, subscribers and requests set.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import cv2
import torch

from sam2_video.modeling.sam2 import SAM2Model
from sam2_video.streaming import FrameResult
from streamer.ingest import END_OF_STREAM, SourceState, VideoFrame
from streamer.protocol import Ack, Error, ErrorCode, FrameMessage, ProtocolError
from streamer.results import masklets
from streamer.sessions.prompts import PromptOutcome, apply_prompt
from streamer.sessions.session import Command, Session, SessionState, TrackerView
from streamer.sessions.subscribers import Subscriber
from streamer.settings import OutputOptions, Settings

logger = logging.getLogger(__name__)

# Longest sleep between passes when idle: bounds how long `stop()` waits for the thread.
_IDLE_WAIT = 0.25


class InferenceWorker:
    """Serves all sessions of one device on a dedicated thread.

    sessions: returns the sessions to serve (called once per pass).
    `alive` says whether the thread runs; `ended` is set when it stops (normally or not), and
    `error` holds the message of an unexpected crash.
    """

    def __init__(
        self,
        *,
        model: SAM2Model,
        sessions: Callable[[], list[Session]],
        settings: Settings,
    ) -> None:
        self.model = model
        self._sessions = sessions
        self.settings = settings
        self.device = next(model.parameters()).device
        self.wake_event = threading.Event()
        self.ended = threading.Event()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next = 0  # round-robin start
        self.frames_processed = 0
        self.busy_seconds = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("worker already started")
        self._thread = threading.Thread(target=self._run, name="inference-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("inference worker did not stop within %.1f s", timeout)

    def _run(self) -> None:
        try:
            if self.device.type == "cpu":
                # One thread per device: intra-op threads would fight the decode threads.
                torch.set_num_threads(1)
            logger.info("inference worker started on %s", self.device)
            while not self._stop.is_set():
                if not self._pass():
                    self.wake_event.wait(_IDLE_WAIT)
                    self.wake_event.clear()
        except Exception as exc:
            logger.exception("inference worker crashed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended.set()
            logger.info("inference worker stopped")

    # --- scheduling ------------------------------------------------------------------------

    def _pass(self) -> bool:
        """Visit every session once, starting after the last served; True if work was done."""
        sessions = self._sessions()
        if not sessions:
            return False
        did_work = False
        start = self._next % len(sessions)
        for session in sessions[start:] + sessions[:start]:
            if self._stop.is_set():
                break
            if session.state is SessionState.CLOSED:
                continue
            did_work |= self._serve_commands(session)
            did_work |= self._serve_frame(session)
        self._next = start + 1
        return did_work

    def _serve_commands(self, session: Session) -> bool:
        commands = session.take_commands()
        for command in commands:
            self._execute(session, command)
        return bool(commands)

    def _serve_frame(self, session: Session) -> bool:
        if session.state not in (SessionState.WAITING, SessionState.RUNNING):
            return False
        if not session.started and session.source.state is not SourceState.FAILED:
            return False  # start="on_connect": no subscriber yet (a failed source still ends)
        if not session.live and any(
            s.frames_in_flight >= s.max_pending for s in session.subscribers
        ):
            return False  # batch: wait for the slowest subscriber rather than drop
        item = session.source.slot.get_nowait()
        if item is None:
            return False
        if item is END_OF_STREAM:
            stats = session.source.stats
            if stats.state is SourceState.FAILED:
                session.finish(SessionState.FAILED, stats.error or "source failed")
            else:
                session.finish(SessionState.FINISHED)
            return True
        self._process(session, item)
        return True

    # --- frames ----------------------------------------------------------------------------

    def _process(self, session: Session, frame: VideoFrame) -> None:
        session.mark_running()
        tracker = session.tracker
        if tracker.frame_hw is not None and frame.image.shape[:2] != tracker.frame_hw:
            # Live sources may change resolution mid-stream (WebRTC adapts to bandwidth);
            # keep tracking at the session's first size rather than lose every object.
            h, w = tracker.frame_hw
            image = cv2.resize(frame.image, (w, h), interpolation=cv2.INTER_AREA)
            frame = dataclasses.replace(frame, image=image)  # listeners see what was tracked
        started = time.perf_counter()
        try:
            # With auto_seed, the first frame also runs the mask generator (seconds on a CPU).
            result = tracker.add_frame(frame.image, pts=frame.pts)
        except Exception as exc:
            logger.exception("session %s: inference failed", session.id)
            session.finish(SessionState.FAILED, f"inference failed: {exc}")
            return
        elapsed = time.perf_counter() - started
        self.busy_seconds += elapsed
        self.frames_processed += 1
        session.processed += 1
        session.inference.observe(elapsed)
        session.view = _view(tracker)
        session.end_to_end.observe(max(0.0, time.time() - frame.capture_time))
        session.sample_rates()
        for listener in session.result_listeners:
            try:
                listener(frame, result)
            except Exception:
                logger.exception("session %s: result listener failed", session.id)
        self._publish(session, frame, result)

    def _publish(self, session: Session, frame: VideoFrame, result: FrameResult) -> None:
        subscribers = session.subscribers
        if not subscribers:
            return
        now = time.monotonic()
        encoded: dict[tuple, FrameMessage] = {}
        h, w = session.tracker.frame_hw
        for subscriber in subscribers:
            options = subscriber.options
            throttled = options.max_fps is not None and session.live
            if throttled and now - subscriber.last_frame_time < 1.0 / options.max_fps:
                continue
            key = (options.obj_ids, options.mask_downscale)
            message = encoded.get(key)
            if message is None:
                message = FrameMessage(
                    frame_idx=result.frame_idx,
                    source_index=frame.index,
                    pts=frame.pts,
                    time_base=None if frame.time_base is None else str(frame.time_base),
                    capture_time=frame.capture_time,
                    latency=max(0.0, time.time() - frame.capture_time),
                    width=int(w),
                    height=int(h),
                    mask_downscale=options.mask_downscale,
                    objects=masklets(
                        result, obj_ids=options.obj_ids, mask_downscale=options.mask_downscale
                    ),
                    lost=list(result.lost),
                )
                encoded[key] = message
            subscriber.last_frame_time = now
            subscriber.offer(message)

    # --- prompts ---------------------------------------------------------------------------

    def _execute(self, session: Session, command: Command) -> None:
        message = command.message
        if session.state in (SessionState.CLOSED, SessionState.FAILED):
            Session.reply(
                command,
                Error(
                    id=message.id,
                    code=ErrorCode.SESSION_ENDED,
                    message=f"session {session.id} is {session.state.value}",
                ),
            )
            return
        try:
            outcome = apply_prompt(session.tracker, message)
        except ProtocolError as exc:
            Session.reply(command, exc.to_message())
            return
        except Exception as exc:
            logger.exception("session %s: %s failed", session.id, message.type)
            Session.reply(
                command,
                Error(
                    id=message.id, code=ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}"
                ),
            )
            return
        session.view = _view(session.tracker)
        Session.reply(command, _ack(message, outcome, session, command.reply_to))


def _view(tracker) -> TrackerView:
    return TrackerView(
        frame_idx=tracker.frame_idx, obj_ids=tuple(tracker.obj_ids), frame_hw=tracker.frame_hw
    )


def _ack(message, outcome: PromptOutcome, session: Session, reply_to: Subscriber | None) -> Ack:
    options: OutputOptions = reply_to.options if reply_to else session.settings.default_output
    objects = []
    if outcome.result is not None:
        objects = masklets(outcome.result, mask_downscale=options.mask_downscale)
    return Ack(
        id=message.id,
        request=message.type,
        frame_idx=session.tracker.frame_idx,
        obj_id=outcome.obj_id,
        obj_ids=outcome.obj_ids,
        objects=objects,
    )
