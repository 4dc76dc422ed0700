"""Prompts shared by the streaming and offline predictors: validation, point merging, and
committing prompted results into memory.

Coordinates: prompts arrive in pixels of the original frame (x, y); the tracker takes them in
model-input pixels of the S x S frame (`scale_points`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam2_video.modeling.sam2 import ImageFeatures
from sam2_video.tracking.memory_bank import ObjectMemory
from sam2_video.tracking.tracker import FrameTracker
from sam2_video.utils.transforms import scale_points


class UnknownObjectError(KeyError):
    """An object id that the session does not track."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def prepare_point_prompt(
    points: np.ndarray | Tensor | None,
    labels: np.ndarray | Tensor | None,
    box: np.ndarray | Tensor | None,
    frame_hw: tuple[int, int],
    image_size: int,
    normalize_coords: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Validate clicks / box in frame pixels -> (coords (1, P, 2), labels (1, P)) model pixels.

    points: (P, 2) float (x, y); labels: (P,) 1 positive / 0 negative; box: (4,) xyxy. A box
    becomes two points labelled 2, 3 placed before the clicks. With `normalize_coords=False`
    the coordinates are already model-input pixels. Returns float32 and int32 tensors on
    `device` (the model's: checked on the host, then uploaded once).
    Raises ValueError for anything malformed or outside the frame.
    """
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be given together")
    if points is None and box is None:
        raise ValueError("give points (with labels) or a box")
    h, w = frame_hw if normalize_coords else (image_size, image_size)
    coords = torch.zeros(0, 2)
    point_labels = torch.zeros(0, dtype=torch.int32)
    if points is not None:
        coords = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(-1, 2)
        point_labels = torch.as_tensor(np.asarray(labels)).reshape(-1).to(torch.int32)
        if coords.shape[0] == 0:
            raise ValueError("points is empty")
        if point_labels.shape[0] != coords.shape[0]:
            raise ValueError(f"{coords.shape[0]} points but {point_labels.shape[0]} labels")
        if not bool(((point_labels == 0) | (point_labels == 1)).all()):
            raise ValueError("labels must be 1 (positive) or 0 (negative)")
    if box is not None:
        corners = torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(-1)
        if corners.shape != (4,):
            raise ValueError("box must be 4 numbers (x0, y0, x1, y1)")
        if corners[2] < corners[0] or corners[3] < corners[1]:
            raise ValueError(f"box must have x0 <= x1 and y0 <= y1, got {corners.tolist()}")
        coords = torch.cat([corners.reshape(2, 2), coords])
        point_labels = torch.cat([torch.tensor([2, 3], dtype=torch.int32), point_labels])
    if not bool(torch.isfinite(coords).all()):
        raise ValueError("coordinates must be finite")
    outside = (coords[:, 0] < 0) | (coords[:, 0] > w) | (coords[:, 1] < 0) | (coords[:, 1] > h)
    if bool(outside.any()):
        raise ValueError(f"coordinates {coords[outside].tolist()} lie outside the {w}x{h} frame")
    if normalize_coords:
        coords = scale_points(coords, frame_hw, image_size)
    return coords[None].to(device), point_labels[None].to(device)


def prepare_mask_prompt(mask: np.ndarray | Tensor, image_size: int, device: torch.device) -> Tensor:
    """(H, W) bool mask at frame resolution -> (1, 1, S, S) float {0, 1} in the model frame."""
    tensor = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    if tensor.ndim != 2 or 0 in tensor.shape:
        raise ValueError(f"mask must be a non-empty (H, W) array, got shape {tuple(tensor.shape)}")
    model_mask = tensor.to(device=device, dtype=torch.float32)[None, None]
    if tuple(tensor.shape) != (image_size, image_size):
        model_mask = F.interpolate(
            (model_mask > 0).float(),
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        model_mask = (model_mask >= 0.5).float()
    return model_mask


def check_mask_size(mask_hw: tuple[int, ...], frame_hw: tuple[int, int] | None) -> None:
    """Raise ValueError unless a mask prompt is (H, W) of the frame."""
    if tuple(mask_hw) != frame_hw:
        raise ValueError(f"mask must be {frame_hw} (the frame's H, W), got {tuple(mask_hw)}")


def merge_points(
    obj: ObjectMemory, frame_idx: int, coords: Tensor, labels: Tensor, clear_old_points: bool
) -> tuple[Tensor, Tensor]:
    """The object's points on a frame after this prompt: the new ones alone, or appended to
    those it already has there (`clear_old_points=False`). coords (1, P, 2), labels (1, P)."""
    if clear_old_points or frame_idx not in obj.points:
        return coords, labels
    old_coords, old_labels = obj.points[frame_idx]
    return torch.cat([old_coords, coords], dim=1), torch.cat([old_labels, labels], dim=1)


def commit_pending(
    tracker: FrameTracker,
    objects: Iterable[ObjectMemory],
    features_at: Callable[[int], ImageFeatures],
) -> list[tuple[ObjectMemory, int]]:
    """Encode the memory of every pending prompted result and file it as a conditioning or a
    tracked output (the official `propagate_in_video_preflight`).

    features_at: a frame index -> that frame's features (batch 1). One memory-encoder batch
    per frame. Returns the (object, frame) pairs committed, for the caller's bookkeeping.
    """
    objects = list(objects)
    by_frame: dict[int, list] = {}
    for obj in objects:
        for frame_idx, pending in obj.pending.items():
            by_frame.setdefault(frame_idx, []).append(pending.output)
    for frame_idx, outputs in by_frame.items():
        tracker.encode_prompted(features_at(frame_idx), outputs)
    committed = []
    for obj in objects:
        for frame_idx, pending in obj.pending.items():
            if pending.is_conditioning:
                obj.conditioning[frame_idx] = pending.output
                obj.tracked.pop(frame_idx, None)
            else:
                obj.tracked[frame_idx] = pending.output
            committed.append((obj, frame_idx))
        obj.pending.clear()
    return committed
