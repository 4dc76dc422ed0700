"""One model step over the next frames of several streaming sessions (cross-stream batching).

Frames of different streams are all S x S after preprocessing, so they share one image-encoder
forward; then every object of every session is one batch row of the memory attention, mask
decoder and memory encoder (each row with its own memory bank and its own frame). Each
session's state stays in its own `StreamingSession`; the batch only carries tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model
from sam2_video.precision import autocast, model_precision
from sam2_video.predictors.stream_types import FrameResult
from sam2_video.tracking.memory_bank import FrameOutput
from sam2_video.tracking.tracker import FrameTracker, TrackGroup


class SteppedSession(Protocol):
    """What the step needs of a session: its model and tracker, and the three phases of a
    frame. `StreamingSession` is one (its `add_frame` runs this step with itself alone)."""

    model: SAM2Model
    tracker: FrameTracker

    def prepare_frame(self, frame: np.ndarray | Tensor) -> Tensor: ...

    def track_group(self, frame_row: int) -> TrackGroup: ...

    def finish_frame(
        self,
        features: ImageFeatures,
        outputs: list[FrameOutput],
        pts: float | int | None = None,
        *,
        seed: bool = True,
    ) -> FrameResult: ...


def batch_key(session: SteppedSession) -> tuple:
    """Sessions with equal keys can share a step (same model and tracking-step options)."""
    return (id(session.model), session.tracker.options, session.tracker.static_shapes)


@torch.inference_mode()
def track_streams(
    sessions: Sequence[SteppedSession],
    frames: Sequence[np.ndarray | Tensor],
    pts: Sequence[float | int | None] | None = None,
    *,
    seed: bool = True,
) -> list[FrameResult | ValueError]:
    """`session.add_frame(frame, pts)` for each pair, in one batched forward.

    sessions: distinct sessions with one `batch_key` (raises ValueError otherwise).
    frames: one frame per session, as `StreamingSession.add_frame` takes them (sizes may differ
        between sessions). seed: as in `StreamingSession.finish_frame`.
    Returns per session its `FrameResult`, or the ValueError its frame was refused with (wrong
    size or type; that session is unchanged and the others go on). An error inside the batched
    forward itself propagates: the caller may retry the sessions one by one to isolate it.
    """
    if len(frames) != len(sessions):
        raise ValueError(f"{len(sessions)} sessions but {len(frames)} frames")
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("a session appears twice in one step")
    if len({batch_key(s) for s in sessions}) > 1:
        raise ValueError("sessions of one step must share the model and tracking options")
    pts = list(pts) if pts is not None else [None] * len(sessions)
    results: list[FrameResult | ValueError | None] = [None] * len(sessions)
    ready: list[int] = []
    images: list[Tensor] = []
    for i, (session, frame) in enumerate(zip(sessions, frames)):
        try:
            images.append(session.prepare_frame(frame))  # (1, 3, S, S)
        except ValueError as exc:
            results[i] = exc
            continue
        ready.append(i)
    if ready:
        model = sessions[ready[0]].model
        # The model's precision (sam2_video.precision): autocast wraps the whole step.
        with autocast(model_precision(model)):
            static = sessions[ready[0]].tracker.static_shapes
            if static is not None and len(images) > 1:
                # Compiled models see a few batch sizes only: pad the frames to the next bucket
                # with copies of the last one (their features are never used).
                images += [images[-1]] * (static.bucket(len(images)) - len(images))
            features = model.forward_image(torch.cat(images))  # one encoder pass, batch F
            groups = [sessions[i].track_group(row) for row, i in enumerate(ready)]
            outputs = sessions[ready[0]].tracker.track_frames(features, groups)
            for row, (i, outs) in enumerate(zip(ready, outputs)):
                # Each session keeps its own frame's features (views of the batch's tensors).
                results[i] = sessions[i].finish_frame(features.select(row), outs, pts[i], seed=seed)
    return results  # type: ignore[return-value]
