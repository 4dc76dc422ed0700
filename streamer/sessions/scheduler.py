"""`DeviceScheduler`: the one thread per device that runs the model for the sessions placed there.

Each step of the loop:
1. **Interactive commands first.** Every session's queued prompts (clicks, boxes, masks,
   removals) run, oldest first, at most `COMMANDS_PER_STEP` per session, so the refined mask of
   a click is answered before any frame work. Expensive commands (`auto_seed`) do not run
   here: they become a *sliced task* of their session.
2. **One unit of fair work.** Among the sessions with a ready frame and those with a sliced
   task, the `FairShare` policy (virtual-time fair queuing over measured device seconds) picks
   the most owed one. If that is a task, one slice runs (one image embedding or one point batch
   of the mask generator) and its cost is charged to its session. Otherwise the step takes the
   ready frames of up to `max_batch` sessions, most owed first, and tracks them in one batched
   forward (`sam2_video.predictors.multi_stream.track_streams`); the measured cost is split
   among them by their rows (1 + objects each).
A session with a sliced task in progress waits for it (its frames and later commands queue);
every other session's frames are held up by at most one slice. Live sources hand over their
newest frame (latest-frame-wins), batch sources every frame in order.

Results are encoded here and handed to subscribers, which hop onto their event loop with
`call_soon_threadsafe`; the event loop never runs the model. With nothing to do the thread
sleeps on `wake_event`, which sources, subscribers and requests set.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import torch

from sam2_video import FrameResult, SAM2Model
from sam2_video.predictors.multi_stream import batch_key, track_streams
from streamer.ingest import SourceState, VideoFrame
from streamer.protocol import Detect, ProtocolError, RemoveObject, Reset
from streamer.sessions.detection import DetectorPool, detect_command_steps, detect_steps
from streamer.sessions.devices import DeviceSpec
from streamer.sessions.fairness import FairShare, by_client
from streamer.sessions.messages import (
    ack_message,
    ended_error,
    internal_error,
    publish_frame,
    tracker_view,
)
from streamer.sessions.prompts import PromptOutcome, apply_prompt, auto_seed_steps, is_expensive
from streamer.sessions.session import Command, Session, SessionState
from streamer.settings import Settings

logger = logging.getLogger(__name__)

# Longest sleep between steps when idle: bounds how long `stop()` waits for the thread.
_IDLE_WAIT = 0.25
# Interactive commands one session may run per step (a flood waits for the next steps).
COMMANDS_PER_STEP = 4
# `max_batch` by device type, measured with bench/bench_serving.py (docs/benchmarks.md): on the
# CPU a batch is no faster than its frames one by one, so sessions are not batched there.
DEFAULT_MAX_BATCH = {"cpu": 1, "cuda": 8}


@dataclass
class SlicedTask:
    """Long work of one session, run one slice per scheduler step.

    steps: a generator (one slice per `next()`; its return value is the result).
    finish: called with the result when the generator is exhausted.
    fail: called with the exception if a slice raises.
    """

    name: str
    steps: Generator[None, None, Any]
    finish: Callable[[object], None]
    fail: Callable[[Exception], None]
    cancel: Callable[[], None] = lambda: None  # the session ended before the task did
    slices: int = 0


class DeviceScheduler:
    """Serves the sessions of one device on a dedicated thread (see the module docstring).

    sessions: returns the sessions placed on this device (called once per step).
    `alive` says whether the thread runs; `ended` is set when it stops (normally or not), and
    `error` holds the message of an unexpected crash, after which its sessions are failed.
    """

    def __init__(
        self,
        *,
        spec: DeviceSpec,
        model: SAM2Model,
        sessions: Callable[[], list[Session]],
        settings: Settings,
    ) -> None:
        self.spec = spec
        self.model = model
        self._sessions = sessions
        self.settings = settings
        self.max_batch = settings.max_batch or DEFAULT_MAX_BATCH.get(spec.kind, 1)
        self.fair: FairShare[str] = FairShare()
        self.client_fair: FairShare[str] = FairShare()  # the same over session owners (clients)
        self.wake_event = threading.Event()
        self.ended = threading.Event()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: dict[str, SlicedTask] = {}
        self.detectors = DetectorPool(settings.detector, str(spec.torch_device))
        # Counters (written by the scheduler thread, read by /metrics).
        self.frames_processed = 0
        self.busy_seconds = 0.0
        self.steps = 0
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.queue_depth = 0  # sessions with a ready frame at the last step
        self.started_at = time.monotonic()

    @property
    def label(self) -> str:
        """The device's label (`cuda:0`, `cpu:0`)."""
        return self.spec.label

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread (once)."""
        if self._thread is not None:
            raise RuntimeError("scheduler already started")
        self._thread = threading.Thread(
            target=self._run, name=f"scheduler-{self.label}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the thread runs and has not been asked to stop."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def wake(self) -> None:
        """Wake the thread now (new frame, command or subscriber)."""
        self.wake_event.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop after its current step; join it for at most `timeout` s."""
        self._stop.set()
        self.wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("scheduler %s did not stop within %.1f s", self.label, timeout)

    def _run(self) -> None:
        try:
            if self.spec.kind == "cpu":
                # One thread per device: intra-op threads would fight the decode threads.
                torch.set_num_threads(1)
            logger.info("scheduler started on %s (max_batch %d)", self.label, self.max_batch)
            while not self._stop.is_set():
                if not self.step():
                    self.wake_event.wait(_IDLE_WAIT)
                    self.wake_event.clear()
        except Exception as exc:
            logger.exception("scheduler %s crashed", self.label)
            self.error = f"{type(exc).__name__}: {exc}"
            for session in self._sessions():
                session.finish(
                    SessionState.FAILED, f"device {self.label} stopped working: {self.error}"
                )
        finally:
            self.ended.set()
            logger.info("scheduler %s stopped", self.label)

    # --- scheduling ------------------------------------------------------------------------

    def step(self) -> bool:
        """One scheduling step (see the module docstring); True if any work was done."""
        sessions = [s for s in self._sessions() if s.state is not SessionState.CLOSED]
        self._drop_orphan_tasks(sessions)
        did_work = False
        for session in sessions:
            did_work |= self._serve_commands(session)
        tasks = [s for s in sessions if s.id in self._tasks]
        ready = [s for s in sessions if s.id not in self._tasks and self._frame_ready(s)]
        self.queue_depth = len(ready)
        if not tasks and not ready:
            return did_work
        by_id = {s.id: s for s in tasks + ready}
        order = [by_id[key] for key in self.fair.order(by_id)]
        order = by_client(order, lambda s: s.owner, self.client_fair)  # per client, then session
        first = order[0]
        if first.id in self._tasks:
            self._run_slice(first)
        else:
            key = batch_key(first.stream)
            batch = [s for s in order if s in ready and batch_key(s.stream) == key]
            self._run_frames(batch[: self.max_batch])
        self.steps += 1
        return True

    def _drop_orphan_tasks(self, sessions: list[Session]) -> None:
        # A finished session still answers prompts on its last frame; a closed or failed one
        # drops its task (its commands were already answered by `Session.close`/`finish`).
        alive = {s.id for s in sessions if s.state is not SessionState.FAILED}
        for session_id in [key for key in self._tasks if key not in alive]:
            task = self._tasks.pop(session_id)
            task.steps.close()
            task.cancel()
        known = {s.id for s in sessions}
        for session_id in self.fair.keys() - known:
            self.fair.forget(session_id)
        for owner in self.client_fair.keys() - {s.owner for s in sessions}:
            self.client_fair.forget(owner)

    def _charge(self, session: Session, seconds: float) -> None:
        self.fair.charge(session.id, seconds)
        self.client_fair.charge(session.owner, seconds)
        session.charge(seconds)
        self.busy_seconds += seconds

    def _frame_ready(self, session: Session) -> bool:
        if session.state not in (SessionState.WAITING, SessionState.RUNNING):
            return False
        if not session.started and session.source.state is not SourceState.FAILED:
            return False  # start="on_connect": no subscriber yet (a failed source still ends)
        if not session.live and any(
            s.frames_in_flight >= s.max_pending for s in session.subscribers
        ):
            return False  # batch: wait for the slowest subscriber rather than drop
        return session.source.slot.ready()

    # --- frames ----------------------------------------------------------------------------

    def _run_frames(self, sessions: list[Session]) -> None:
        items: list[tuple[Session, VideoFrame]] = []
        for session in sessions:
            item = session.source.slot.get_nowait()
            if item is None:
                continue
            if not isinstance(item, VideoFrame):  # END_OF_STREAM
                stats = session.source.stats
                if stats.state is SourceState.FAILED:
                    session.finish(SessionState.FAILED, stats.error or "source failed")
                else:
                    session.finish(SessionState.FINISHED)
                continue
            session.mark_running()
            items.append((session, _at_session_size(session, item)))
        if not items:
            return
        started = time.perf_counter()
        results = self._track(items)
        elapsed = time.perf_counter() - started
        self.batch_sizes[len(items)] += 1
        rows = [1 + len(s.stream.obj_ids) for s, _ in items]
        for (session, frame), result, weight in zip(items, results, rows):
            self._charge(session, elapsed * weight / sum(rows))
            if isinstance(result, Exception):
                logger.error("session %s: inference failed: %s", session.id, result)
                session.finish(SessionState.FAILED, f"inference failed: {result}")
                continue
            self.frames_processed += 1
            session.processed += 1
            session.inference.observe(elapsed)
            session.view = tracker_view(session.stream)
            session.detection.image = frame.image
            if session.stream.seeding_due:
                # Auto-seeding of this frame runs sliced; the frame is published after it.
                self._start_seeding(session, frame, result)
                continue
            if session.detection.due(result.frame_idx):
                self._start_detection(session, frame, result)
                continue
            self._deliver(session, frame, result)

    def _track(self, items: list[tuple[Session, VideoFrame]]) -> Sequence[FrameResult | Exception]:
        streams = [s.stream for s, _ in items]
        frames = [f.image for _, f in items]
        pts = [f.pts for _, f in items]
        try:
            return track_streams(streams, frames, pts, seed=False)
        except Exception as exc:
            if len(items) == 1:
                logger.exception("session %s: inference failed", items[0][0].id)
                return [exc]
            # Something in the batch broke the forward: retry one by one so that only the
            # session at fault fails.
            logger.warning(
                "batched step failed (%s); retrying its %d sessions alone", exc, len(items)
            )
        results: list[FrameResult | Exception] = []
        for stream, frame, stamp in zip(streams, frames, pts):
            try:
                results.append(track_streams([stream], [frame], [stamp], seed=False)[0])
            except Exception as exc:
                results.append(exc)
        return results

    def _deliver(self, session: Session, frame: VideoFrame, result: FrameResult) -> None:
        session.end_to_end.observe(max(0.0, time.time() - frame.capture_time))
        session.sample_rates()
        for listener in session.result_listeners:
            try:
                listener(frame, result)
            except Exception:
                logger.exception("session %s: result listener failed", session.id)
        publish_frame(session, frame, result)

    # --- sliced tasks ----------------------------------------------------------------------

    def _start_seeding(self, session: Session, frame: VideoFrame, result: FrameResult) -> None:
        def finish(seeded: object) -> None:
            session.view = tracker_view(session.stream)
            self._deliver(session, frame, seeded)  # type: ignore[arg-type]

        def fail(exc: Exception) -> None:
            session.finish(SessionState.FAILED, f"auto-seeding failed: {exc}")

        steps = session.stream.auto_seed_steps(lost=result.lost)
        self._tasks[session.id] = SlicedTask("auto_seed", steps, finish, fail)

    def _start_detection(self, session: Session, frame: VideoFrame, result: FrameResult) -> None:
        """Periodic detector seeding of this frame, sliced; the frame is published after it.
        A failing detector (or a full session) costs this frame its new objects, nothing more."""
        state = session.detection
        options = state.options
        if options is None:  # `due` said otherwise: nothing to detect
            self._deliver(session, frame, result)
            return

        def finish(outcome: object) -> None:
            session.view = tracker_view(session.stream)
            self._deliver(session, frame, _with_lost(outcome.result, result))  # type: ignore[attr-defined]

        def fail(exc: Exception) -> None:
            state.failures += 1
            logger.warning(
                "session %s: detection on frame %d: %s", session.id, result.frame_idx, exc
            )
            session.view = tracker_view(session.stream)
            self._deliver(session, frame, _with_lost(session.stream.current_result(), result))

        try:
            detector = self.detectors.get(options)
        except ProtocolError as exc:
            state.options = None  # no detector: stop trying on every frame
            fail(exc)
            return
        state.runs += 1
        steps = detect_steps(session.stream, detector, frame.image, options, state.labels)
        self._tasks[session.id] = SlicedTask("detect", steps, finish, fail)

    def _run_slice(self, session: Session) -> None:
        task = self._tasks[session.id]
        started = time.perf_counter()
        done, value, error = False, None, None
        try:
            next(task.steps)
        except StopIteration as stop:
            done, value = True, stop.value
        except Exception as exc:
            done, error = True, exc
        task.slices += 1
        self._charge(session, time.perf_counter() - started)
        if not done:
            return
        del self._tasks[session.id]
        if error is not None:
            if not isinstance(error, ProtocolError):
                logger.error("session %s: %s failed: %r", session.id, task.name, error)
            task.fail(error)
        else:
            task.finish(value)

    # --- commands --------------------------------------------------------------------------

    def _serve_commands(self, session: Session) -> bool:
        did_work = False
        for _ in range(COMMANDS_PER_STEP):
            if session.id in self._tasks:
                break  # later commands wait for the session's own long command
            command = session.next_command()
            if command is None:
                break
            started = time.perf_counter()
            if session.state in (SessionState.CLOSED, SessionState.FAILED):
                Session.reply(command, ended_error(session, command.message))
            elif is_expensive(command.message):
                self._start_command_task(session, command)
            else:
                self._execute(session, command)
            self._charge(session, time.perf_counter() - started)
            did_work = True
        return did_work

    def _start_command_task(self, session: Session, command: Command) -> None:
        message = command.message

        def finish(outcome: object) -> None:
            assert isinstance(outcome, PromptOutcome)  # what auto_seed_steps returns
            session.view = tracker_view(session.stream)
            Session.reply(command, ack_message(message, outcome, session, command.reply_to))

        def fail(exc: Exception) -> None:
            if isinstance(exc, ProtocolError):
                Session.reply(command, exc.to_message())
            else:
                Session.reply(command, internal_error(message, exc))

        def cancel() -> None:
            Session.reply(command, ended_error(session, message))

        if isinstance(message, Detect):
            try:
                steps = detect_command_steps(
                    session.detection, self.detectors, session.stream, message
                )
            except ProtocolError as exc:
                fail(exc)
                return
        else:
            steps = auto_seed_steps(session.stream, message)  # type: ignore[arg-type]
        self._tasks[session.id] = SlicedTask(message.type, steps, finish, fail, cancel)

    def _execute(self, session: Session, command: Command) -> None:
        message = command.message
        try:
            outcome = apply_prompt(session.stream, message)
        except ProtocolError as exc:
            Session.reply(command, exc.to_message())
            return
        except Exception as exc:
            logger.exception("session %s: %s failed", session.id, message.type)
            Session.reply(command, internal_error(message, exc))
            return
        session.view = tracker_view(session.stream)
        if isinstance(message, (RemoveObject, Reset)):
            session.detection.forget(getattr(message, "obj_id", None))
        Session.reply(command, ack_message(message, outcome, session, command.reply_to))


def _with_lost(seeded: FrameResult, tracked: FrameResult) -> FrameResult:
    """The seeded result reports the objects lost on the tracked frame."""
    return dataclasses.replace(seeded, lost=list(tracked.lost))


def _at_session_size(session: Session, frame: VideoFrame) -> VideoFrame:
    tracker = session.stream
    if tracker.frame_hw is None or frame.image.shape[:2] == tracker.frame_hw:
        return frame
    # Live sources may change resolution mid-stream (WebRTC adapts to bandwidth); keep
    # tracking at the session's first size rather than lose every object.
    h, w = tracker.frame_hw
    image = cv2.resize(frame.image, (w, h), interpolation=cv2.INTER_AREA)
    return dataclasses.replace(frame, image=image)  # listeners see what was tracked
