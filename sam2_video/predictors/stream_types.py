"""The types of a streaming session: its options, its per-frame result and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam2_video.modeling.resize import resize_bilinear
from sam2_video.predictors.auto_seed import AutoSeedOptions


class NoFrameError(RuntimeError):
    """A prompt arrived before the first frame."""


class FrameSizeError(ValueError):
    """A frame whose size differs from the stream's (call `reset()` to change size)."""


class TooManyObjectsError(ValueError):
    """Adding an object would exceed the session's `max_objects`."""


@dataclass(frozen=True)
class SessionOptions:
    """Settings of one streaming session.

    max_objects: objects tracked at most (prompts and auto-seeding stop there).
    max_conditioning_frames: prompted frames remembered per object (first + most recent).
    corrections_as_conditioning: a prompt on an object already tracked on this frame becomes a
        conditioning frame, so the correction persists (the official offline default, False,
        forgets it after a few frames).
    fill_hole_area: holes up to this many low-res pixels are filled (official builder: 8).
    non_overlapping: each pixel belongs to at most one object in the results.
    return_logits: include per-object logits at frame resolution in every result.
    lost_after: frames an object may stay absent before it is reported lost (None: never).
    drop_lost: remove lost objects from the session.
    static_shapes: feed the network fixed shapes (full memory bank, object-count buckets) so that
        a compiled model (`sam2_video.compile.compile_model`) never recompiles; slower eagerly.
    auto_seed: start tracking what the automatic mask generator finds on the first frame (and
        every `auto_seed.reseed_every` frames); None: objects come from prompts only.
    seed_on_demand: keep the current frame (one full-resolution copy) so that `auto_seed()`
        can run on any frame; with False and no `auto_seed`, no copy is made.
    """

    max_objects: int = 64
    max_conditioning_frames: int = 4
    corrections_as_conditioning: bool = True
    fill_hole_area: int = 8
    non_overlapping: bool = False
    return_logits: bool = False
    lost_after: int | None = 30
    drop_lost: bool = False
    static_shapes: bool = False
    auto_seed: AutoSeedOptions | None = None
    seed_on_demand: bool = True


@dataclass(frozen=True)
class FrameResult:
    """Masklets of one frame (N objects, frame of H x W pixels).

    frame_idx: index in the stream (0-based). pts: the caller's timestamp, passed through.
    obj_ids: (N,) ids, in the order objects were added.
    masks: (N, H, W) bool. logits: (N, H, W) float32 when requested, else None.
    object_scores: (N,) float32 presence logits (> 0 present). ious: (N,) predicted IoU.
    boxes: (N, 4) float32 xyxy pixels of each mask (zeros for empty masks).
    lost: ids reported lost on this frame (absent for `lost_after` frames).
    low_res_logits: (N, S/4, S/4) float32, the model's own output, from which `masks_at` makes
        masks at any other size without going through H x W; None when the session makes
        masks non-overlapping (that rule is applied at frame size).
    """

    frame_idx: int
    pts: float | int | None
    obj_ids: list[int]
    masks: np.ndarray
    object_scores: np.ndarray
    ious: np.ndarray
    boxes: np.ndarray
    logits: np.ndarray | None = None
    lost: list[int] = field(default_factory=list)
    low_res_logits: np.ndarray | None = None

    def masks_at(self, hw: tuple[int, int]) -> np.ndarray:
        """(N, h, w) bool masks at another size, e.g. for a client that asks for smaller masks.

        Resized straight from the low-res logits (bilinear, as the frame-size masks are);
        falls back to an area resize of `masks` when there are none.
        """
        h, w = hw
        if self.low_res_logits is None:
            if not len(self.masks):
                return np.zeros((0, h, w), bool)
            small = F.interpolate(
                torch.from_numpy(self.masks).float()[:, None], (h, w), mode="area"
            )
            return (small[:, 0] >= 0.5).numpy()
        logits = torch.from_numpy(self.low_res_logits)[:, None]  # (N, 1, S/4, S/4)
        return (resize_bilinear(logits, (h, w))[:, 0] > 0).numpy()


def masks_to_boxes(masks: Tensor) -> Tensor:
    """(N, H, W) bool -> (N, 4) float32 xyxy (inclusive pixel extents); zeros for empty masks."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, device=masks.device)
    # max over uint8 is an order of magnitude faster than Tensor.any over bool on CPU.
    as_bytes = masks.view(torch.uint8)
    rows, cols = as_bytes.amax(dim=2) > 0, as_bytes.amax(dim=1) > 0  # (N, H), (N, W)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ys, h).min(dim=1).values
    y1 = torch.where(rows, ys, -1).max(dim=1).values
    x0 = torch.where(cols, xs, w).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(rows.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))
