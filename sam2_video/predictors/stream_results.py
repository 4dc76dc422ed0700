"""A streaming session's per-frame answer: every object's mask, score and box on one frame."""

from __future__ import annotations

import numpy as np
import torch

from sam2_video.modeling.resize import resize_bilinear
from sam2_video.predictors.stream_types import FrameResult, SessionOptions, masks_to_boxes
from sam2_video.tracking.dam4sam import Dam4SamMemory
from sam2_video.tracking.memory_bank import ObjectMemory
from sam2_video.tracking.tracker import FrameTracker
from sam2_video.utils.postprocess import non_overlapping


def frame_result(
    tracker: FrameTracker,
    objects: list[ObjectMemory],
    frame_idx: int,
    pts: float | int | None,
    frame_hw: tuple[int, int],
    options: SessionOptions,
    lost: list[int],
) -> FrameResult:
    """The `FrameResult` of `objects` on frame `frame_idx` (their latest outputs there).

    Masks are the low-res logits upsampled to the frame's (H, W), as the official predictor
    does; an object with no output on the frame is reported absent (score -1024, empty mask).
    """
    h, w = frame_hw
    if not objects:
        empty = np.zeros(0, np.float32)
        return FrameResult(
            frame_idx,
            pts,
            [],
            np.zeros((0, h, w), bool),
            empty,
            empty,
            np.zeros((0, 4), np.float32),
            None,
            lost,
        )
    outputs = [obj.output_at(frame_idx) for obj in objects]
    low_res = tracker.low_res(outputs)  # (N, 1, S/4, S/4)
    logits = resize_bilinear(low_res, (h, w))[:, 0]  # (N, H, W)
    if options.non_overlapping:
        logits = non_overlapping(logits)
    masks = logits > 0
    # Scores, IoUs and boxes travel to the host in one copy: (N, 6) = score, iou, x0 y0 x1 y1.
    absent = low_res.new_tensor(-1024.0, dtype=torch.float32)  # on the device: stack needs it
    none = low_res.new_zeros((), dtype=torch.float32)
    scores = torch.stack(
        [out.object_score.reshape(()).float() if out is not None else absent for out in outputs]
    )
    ious = torch.stack(
        [
            out.ious.max().float() if out is not None and out.ious is not None else none
            for out in outputs
        ]
    )
    summary = torch.cat(
        [scores[:, None], ious[:, None], masks_to_boxes(masks).float()], dim=1
    ).cpu()
    return FrameResult(
        frame_idx=frame_idx,
        pts=pts,
        obj_ids=[obj.obj_id for obj in objects],
        masks=masks.cpu().numpy(),
        object_scores=summary[:, 0].numpy().copy(),
        ious=summary[:, 1].numpy().copy(),
        boxes=summary[:, 2:].numpy().copy(),
        logits=logits.float().cpu().numpy() if options.return_logits else None,
        lost=lost,
        promoted=[
            obj.obj_id
            for obj in objects
            if isinstance(obj, Dam4SamMemory) and obj.last_promoted == frame_idx
        ],
        low_res_logits=None if options.non_overlapping else low_res[:, 0].float().cpu().numpy(),
    )
