"""Applying client prompts to a `StreamingSession` (runs on the
`DeviceScheduler` thread).

Each prompt acts on the session's current frame. Failures raise `ProtocolError` with the
code of the `error` reply; the session is left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from sam2_video import FrameResult, StreamingSession
from sam2_video.predictors.stream_types import NoFrameError, TooManyObjectsError
from sam2_video.predictors.streaming import UnknownObjectError
from sam2_video.utils.steps import drain
from streamer.protocol import (
    AddBox,
    AddMask,
    AddPoints,
    AutoSeed,
    Detect,
    ErrorCode,
    PromptMessage,
    ProtocolError,
    RemoveObject,
    RequestId,
    Reset,
)
from streamer.results import decode_rle

logger = logging.getLogger(__name__)

# How many frames a prompt's `frame_idx` may lag behind the session's current frame: a live
# stream moves on while the user clicks, and the click still lands on the current frame.
MAX_PROMPT_LAG = 30


@dataclass
class PromptOutcome:
    """What a prompt did: the current frame's result and the objects it created or changed."""

    result: FrameResult | None  # None after `reset` (no current frame)
    obj_id: int | None = None
    obj_ids: list[int] = field(default_factory=list)


def _check_frame(tracker: StreamingSession, frame_idx: int | None, request_id: RequestId) -> None:
    if tracker.frame_hw is None:
        raise ProtocolError(
            ErrorCode.NOT_READY,
            "no frame processed yet: prompts apply to the current frame",
            request_id,
        )
    if frame_idx is None:
        return
    if frame_idx > tracker.frame_idx:
        raise ProtocolError(
            ErrorCode.OUT_OF_RANGE,
            f"frame {frame_idx} is not processed yet (current frame: {tracker.frame_idx})",
            request_id,
        )
    if frame_idx < tracker.frame_idx - MAX_PROMPT_LAG:
        raise ProtocolError(
            ErrorCode.OUT_OF_RANGE,
            f"frame {frame_idx} is too old: prompts apply to the current frame "
            f"({tracker.frame_idx}) and may lag it by at most {MAX_PROMPT_LAG} frames",
            request_id,
        )


def check_mask_size(
    mask_hw: Sequence[int], frame_hw: tuple[int, int] | None, request_id: RequestId
) -> None:
    """Raise the `error` reply's ProtocolError unless an `add_mask` prompt of size `mask_hw`
    (height, width) fits the current frame `frame_hw` (height, width; None before the first)."""
    if frame_hw is None:
        raise ProtocolError(
            ErrorCode.NOT_READY,
            "no frame processed yet: prompts apply to the current frame",
            request_id,
        )
    if tuple(mask_hw) != tuple(frame_hw):
        h, w = mask_hw
        raise ProtocolError(
            ErrorCode.OUT_OF_RANGE,
            f"mask is {w}x{h} but the frame is {frame_hw[1]}x{frame_hw[0]}",
            request_id,
        )


def _check_coords(
    tracker: StreamingSession, coords: Sequence[Sequence[float]], request_id: RequestId
) -> None:
    h, w = _frame_hw(tracker)
    for x, y in coords:
        if not (0 <= x <= w and 0 <= y <= h):
            raise ProtocolError(
                ErrorCode.OUT_OF_RANGE,
                f"point ({x}, {y}) lies outside the {w}x{h} frame",
                request_id,
            )


def _frame_hw(tracker: StreamingSession) -> tuple[int, int]:
    if tracker.frame_hw is None:  # callers check first (`_check_frame`)
        raise NoFrameError("no frame processed yet")
    return tracker.frame_hw


def apply_prompt(tracker: StreamingSession, message: PromptMessage) -> PromptOutcome:
    """Run one prompt on the current frame."""
    rid = message.id
    try:
        if isinstance(message, Reset):
            tracker.reset()
            return PromptOutcome(result=None)
        if isinstance(message, RemoveObject):
            _check_frame(tracker, None, rid)
            tracker.remove_object(message.obj_id)
            return PromptOutcome(tracker.current_result(), obj_id=message.obj_id)
        _check_frame(tracker, message.frame_idx if hasattr(message, "frame_idx") else None, rid)
        if isinstance(message, AddPoints):
            corners = [] if message.box is None else [message.box[:2], message.box[2:]]
            _check_coords(tracker, [*message.points, *corners], rid)
            result = tracker.add_points(
                message.obj_id,
                np.asarray(message.points, np.float32),
                np.asarray(message.labels, np.int32),
                box=None if message.box is None else np.asarray(message.box, np.float32),
                clear_old_points=message.clear_old_points,
            )
            return PromptOutcome(result, obj_id=_prompted_id(message.obj_id, result))
        if isinstance(message, AddBox):
            _check_coords(tracker, [message.box[:2], message.box[2:]], rid)
            result = tracker.add_box(message.obj_id, np.asarray(message.box, np.float32))
            return PromptOutcome(result, obj_id=_prompted_id(message.obj_id, result))
        if isinstance(message, AddMask):
            # Checked on arrival (connection.py) and again here: a reset may intervene.
            check_mask_size(message.mask.size, tracker.frame_hw, rid)
            h, w = message.mask.size
            try:
                mask = decode_rle(message.mask, max_pixels=h * w)  # validated, then decoded
            except ValueError as exc:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc), rid) from exc
            result = tracker.add_mask(message.obj_id, mask)
            return PromptOutcome(result, obj_id=_prompted_id(message.obj_id, result))
        if isinstance(message, AutoSeed):
            return _auto_seed(tracker, message)
    except ProtocolError:
        raise
    except UnknownObjectError as exc:
        raise ProtocolError(ErrorCode.UNKNOWN_OBJECT, str(exc), rid) from exc
    except TooManyObjectsError as exc:
        raise ProtocolError(ErrorCode.TOO_MANY_OBJECTS, str(exc), rid) from exc
    except NoFrameError as exc:
        raise ProtocolError(ErrorCode.NOT_READY, str(exc), rid) from exc
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc), rid) from exc
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"{message.type} is not a prompt", rid)


def _prompted_id(requested: int | None, result: FrameResult) -> int:
    # A new object (obj_id None) is the last one added.
    return requested if requested is not None else result.obj_ids[-1]


def _auto_seed(tracker: StreamingSession, message: AutoSeed) -> PromptOutcome:
    return drain(auto_seed_steps(tracker, message))


def auto_seed_steps(
    tracker: StreamingSession, message: AutoSeed
) -> Generator[None, None, PromptOutcome]:
    """`auto_seed` in slices (see `StreamingSession.auto_seed_steps`): one slice per `next()`,
    the outcome as the generator's return value. Raises ProtocolError like `apply_prompt`."""
    if tracker.frame_hw is None:
        raise ProtocolError(ErrorCode.NOT_READY, "no frame processed yet", message.id)
    if len(tracker.obj_ids) >= tracker.options.max_objects:
        raise ProtocolError(
            ErrorCode.TOO_MANY_OBJECTS,
            f"session already tracks {len(tracker.obj_ids)} objects (its maximum)",
            message.id,
        )
    before = set(tracker.obj_ids)
    result = yield from tracker.auto_seed_steps()
    created = [obj_id for obj_id in result.obj_ids if obj_id not in before]
    return PromptOutcome(result, obj_ids=created)


def is_expensive(message: PromptMessage) -> bool:
    """Commands that run the automatic mask generator or a detector (seconds of device time):
    sliced by the scheduler and rate limited per session."""
    return isinstance(message, (AutoSeed, Detect))
