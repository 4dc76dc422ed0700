"""Messages the scheduler sends: frame masklets to subscribers, replies to prompts.

Runs on the scheduler thread; `Subscriber.offer` hops onto the subscriber's event loop.
"""

from __future__ import annotations

import time

from sam2_video import FrameResult, StreamingSession
from streamer.ingest import VideoFrame
from streamer.protocol import Ack, Error, ErrorCode, FrameMessage, PromptMessage
from streamer.results import masklets
from streamer.sessions.prompts import PromptOutcome
from streamer.sessions.session import Session, TrackerView
from streamer.sessions.subscribers import Subscriber
from streamer.settings import OutputOptions


def publish_frame(session: Session, frame: VideoFrame, result: FrameResult) -> None:
    """Offer a frame's masklets to the session's subscribers (each with its output options;
    one encoding per distinct option set)."""
    subscribers = session.subscribers
    if not subscribers:
        return
    now = time.monotonic()
    encoded: dict[tuple, FrameMessage] = {}
    if session.stream.frame_hw is None:  # a result always follows a frame
        return
    h, w = session.stream.frame_hw
    for subscriber in subscribers:
        options = subscriber.options
        max_fps = options.max_fps if session.live else None
        if max_fps is not None and now - subscriber.last_frame_time < 1.0 / max_fps:
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
                    result,
                    obj_ids=options.obj_ids,
                    mask_downscale=options.mask_downscale,
                    labels=session.detection.labels,
                ),
                lost=list(result.lost),
            )
            encoded[key] = message
        subscriber.last_frame_time = now
        subscriber.offer(message)


def tracker_view(tracker: StreamingSession) -> TrackerView:
    """What the event loop may read of `tracker` (a snapshot, safe across threads)."""
    return TrackerView(
        frame_idx=tracker.frame_idx, obj_ids=tuple(tracker.obj_ids), frame_hw=tracker.frame_hw
    )


def ended_error(session: Session, message: PromptMessage) -> Error:
    """The `session_ended` reply to `message`, for a session that no longer takes prompts."""
    return Error(
        id=message.id,
        code=ErrorCode.SESSION_ENDED,
        message=f"session {session.id} is {session.state.value}",
    )


def internal_error(message: PromptMessage, exc: Exception) -> Error:
    """The `internal` reply to `message`, which failed with the unexpected `exc`."""
    return Error(id=message.id, code=ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}")


def ack_message(
    message: PromptMessage, outcome: PromptOutcome, session: Session, reply_to: Subscriber | None
) -> Ack:
    """The `ack` of a prompt: its outcome's masklets in `reply_to`'s output options
    (the session's defaults without a subscriber)."""
    options: OutputOptions = reply_to.options if reply_to else session.settings.default_output
    objects = []
    if outcome.result is not None:
        objects = masklets(
            outcome.result,
            mask_downscale=options.mask_downscale,
            labels=session.detection.labels,
        )
    return Ack(
        id=message.id,
        request=message.type,
        frame_idx=session.stream.frame_idx,
        obj_id=outcome.obj_id,
        obj_ids=outcome.obj_ids,
        objects=objects,
    )
