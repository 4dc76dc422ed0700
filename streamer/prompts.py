"""Applying client prompts to a `StreamingSession` (runs on the inference worker thread).

Each prompt acts on the session's current frame. Failures raise `ProtocolError` with the
code of the `error` reply; the session is left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sam2_video.modeling.sam2 import SAM2Model
from sam2_video.streaming import (
    FrameResult,
    NoFrameError,
    StreamingSession,
    TooManyObjectsError,
)
from sam2_video.video_predictor import UnknownObjectError
from streamer.protocol import (
    AddBox,
    AddMask,
    AddPoints,
    AutoSeed,
    ErrorCode,
    PromptMessage,
    ProtocolError,
    RemoveObject,
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


class AutoSeeder:
    """Finds objects to track on a frame with the automatic mask generator.

    Masks are taken largest-first (after the generator's own quality filters and NMS), skipping
    those mostly covered by masks already taken, up to `max_objects`.
    """

    def __init__(self, model: SAM2Model, *, points_per_side: int, max_objects: int) -> None:
        self.model = model
        self.points_per_side = points_per_side
        self.max_objects = max_objects
        self._generator = None

    def masks(self, image: np.ndarray, *, limit: int, min_area: int = 0) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB -> up to `limit` (H, W) bool masks."""
        if self._generator is None:
            from sam2_video.automatic_mask_generator import SAM2AutomaticMaskGenerator

            self._generator = SAM2AutomaticMaskGenerator(
                self.model, points_per_side=self.points_per_side
            )
        annotations = self._generator.generate(image)
        annotations.sort(key=lambda a: a["area"], reverse=True)
        covered = np.zeros(image.shape[:2], bool)
        chosen = []
        for ann in annotations:
            if len(chosen) >= min(limit, self.max_objects):
                break
            mask = np.asarray(ann["segmentation"], bool)
            area = int(mask.sum())
            if area == 0 or area < min_area:
                continue
            if (mask & covered).sum() > 0.5 * area:
                continue
            chosen.append(mask)
            covered |= mask
        return chosen


def _check_frame(tracker: StreamingSession, frame_idx: int | None, request_id) -> None:
    if tracker.frame_hw is None:
        raise ProtocolError(
            ErrorCode.NOT_READY, "no frame processed yet: prompts apply to the current frame",
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


def _check_coords(
    tracker: StreamingSession, coords: Sequence[Sequence[float]], request_id
) -> None:
    h, w = tracker.frame_hw
    for x, y in coords:
        if not (0 <= x <= w and 0 <= y <= h):
            raise ProtocolError(
                ErrorCode.OUT_OF_RANGE,
                f"point ({x}, {y}) lies outside the {w}x{h} frame",
                request_id,
            )


def apply_prompt(
    tracker: StreamingSession,
    message: PromptMessage,
    *,
    image: np.ndarray | None = None,
    seeder: AutoSeeder | None = None,
) -> PromptOutcome:
    """Run one prompt on the current frame. image: the current frame (for `auto_seed`)."""
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
            try:
                mask = decode_rle(message.mask)
            except ValueError as exc:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc), rid) from exc
            if mask.shape != tracker.frame_hw:
                raise ProtocolError(
                    ErrorCode.OUT_OF_RANGE,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but the frame is "
                    f"{tracker.frame_hw[1]}x{tracker.frame_hw[0]}",
                    rid,
                )
            result = tracker.add_mask(message.obj_id, mask)
            return PromptOutcome(result, obj_id=_prompted_id(message.obj_id, result))
        if isinstance(message, AutoSeed):
            return _auto_seed(tracker, message, image, seeder)
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


def _auto_seed(
    tracker: StreamingSession,
    message: AutoSeed,
    image: np.ndarray | None,
    seeder: AutoSeeder | None,
) -> PromptOutcome:
    if image is None or seeder is None:
        raise ProtocolError(ErrorCode.NOT_READY, "no frame to seed from", message.id)
    room = tracker.options.max_objects - len(tracker.obj_ids)
    if room <= 0:
        raise ProtocolError(
            ErrorCode.TOO_MANY_OBJECTS,
            f"session already tracks {len(tracker.obj_ids)} objects (its maximum)",
            message.id,
        )
    limit = min(room, message.max_objects or room)
    created = []
    result = tracker.current_result()
    for mask in seeder.masks(image, limit=limit, min_area=message.min_area):
        result = tracker.add_mask(None, mask)
        created.append(result.obj_ids[-1])
    logger.info("auto_seed: %d objects on frame %d", len(created), tracker.frame_idx)
    return PromptOutcome(result, obj_ids=created)
