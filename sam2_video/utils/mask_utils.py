"""Helpers for the automatic mask generator (AMG).

Everything here is model-free: point grids and crop boxes, mask scoring (stability
score), mask <-> box / RLE conversions, small-region cleanup and a pure-torch
non-maximum suppression that reproduces ``torchvision.ops.nms`` / ``batched_nms``
keep order exactly (the AMG output order depends on it).

Conventions:
* boxes are ``xyxy`` int64 (or float) tensors; ``x1``/``y1`` are the *inclusive* last
  mask pixel for boxes computed from masks, while crop boxes use an exclusive end;
* points are ``(x, y)`` pixels;
* RLEs are "uncompressed" COCO dicts ``{"size": [H, W], "counts": [int, ...]}`` over
  the mask flattened in column-major (Fortran) order, starting with a background run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask

Rle = dict[str, Any]


# --------------------------------------------------------------------------- records


@dataclass
class MaskRecords:
    """Per-mask records kept by the AMG, one row per mask (``N`` rows).

    Attributes:
        iou_preds: (N,) float32, the model's predicted mask IoU.
        points: (N, 2) float32, the (x, y) prompt point in pixels of the full image.
        stability_score: (N,) float32, see `calculate_stability_score`.
        boxes: (N, 4) int64 ``xyxy`` box around the mask, full-image pixels.
        rles: N uncompressed RLEs of the masks at full-image size.
        crop_boxes: (N, 4) int64 ``xyxy`` crop the mask was predicted in.
    """

    iou_preds: torch.Tensor
    points: torch.Tensor
    stability_score: torch.Tensor
    boxes: torch.Tensor
    rles: list[Rle]
    crop_boxes: torch.Tensor

    def __len__(self) -> int:
        return len(self.rles)

    def filter(self, keep: torch.Tensor) -> MaskRecords:
        """Rows selected by ``keep``: a (N,) bool mask or int64 indices (order kept)."""
        keep = keep.cpu()
        if keep.dtype == torch.bool:
            indices = keep.nonzero().flatten().tolist()
        else:
            indices = keep.tolist()
        picked: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                picked[f.name] = [value[i] for i in indices]
            else:
                picked[f.name] = value[keep.to(value.device)]
        return MaskRecords(**picked)

    @staticmethod
    def cat(parts: Sequence[MaskRecords]) -> MaskRecords:
        """Concatenate records row-wise (``parts`` must not be empty)."""
        if not parts:
            raise ValueError("MaskRecords.cat needs at least one part")
        merged: dict[str, Any] = {}
        for f in fields(MaskRecords):
            values = [getattr(p, f.name) for p in parts]
            if isinstance(values[0], list):
                merged[f.name] = list(itertools.chain.from_iterable(values))
            else:
                merged[f.name] = torch.cat(values, dim=0)
        return MaskRecords(**merged)


# --------------------------------------------------------------------------- grids and crops


def build_point_grid(n_per_side: int) -> np.ndarray:
    """Regular grid of cell centres in [0, 1]^2.

    Returns:
        (n_per_side**2, 2) float64 ``(x, y)``, x varying fastest.
    """
    half_cell = 1 / (2 * n_per_side)
    coords = np.linspace(half_cell, 1 - half_cell, n_per_side)
    xs, ys = np.meshgrid(coords, coords, indexing="xy")  # (n, n) each
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """One normalised point grid per crop layer (layer 0 = full image).

    Layer ``i`` has ``int(n_per_side / scale_per_layer**i)`` points per side.
    """
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes for a multi-layer crop pyramid.

    Layer 0 is the full image; layer ``i >= 1`` tiles the image with ``(2**i)**2``
    overlapping crops, the overlap being ``overlap_ratio`` of the short side scaled
    by ``2 / 2**i``.

    Args:
        im_size: (H, W) of the image.
    Returns:
        crop boxes as ``[x0, y0, x1, y1]`` int pixels (exclusive end), and the layer index
        of each box. Within a layer, crops are ordered x-major (all y for the first x0, ...).
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    crop_boxes = [[0, 0, im_w, im_h]]
    layer_idxs = [0]
    for layer in range(1, n_layers + 1):
        n_per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = math.ceil((overlap * (n_per_side - 1) + im_w) / n_per_side)
        crop_h = math.ceil((overlap * (n_per_side - 1) + im_h) / n_per_side)
        x0s = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        for x0, y0 in itertools.product(x0s, y0s):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(layer)
    return crop_boxes, layer_idxs


# --------------------------------------------------------------------------- masks and boxes


def calculate_stability_score(
    mask_logits: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """IoU between the masks binarised at ``threshold +- offset``.

    The high-threshold mask is contained in the low-threshold one, so the IoU is a ratio
    of pixel counts.

    Args:
        mask_logits: (..., H, W) float logits.
    Returns:
        (...) float32 scores in [0, 1] (NaN where the low-threshold mask is empty).
    """
    high = mask_logits > (mask_threshold + threshold_offset)  # (..., H, W)
    low = mask_logits > (mask_threshold - threshold_offset)  # (..., H, W)
    # Row sums in int16 are several times faster than one int32 sum (and cannot overflow).
    row_dtype = (
        torch.int16 if mask_logits.shape[-1] <= torch.iinfo(torch.int16).max else torch.int32
    )
    intersections = high.sum(-1, dtype=row_dtype).sum(-1, dtype=torch.int32)
    unions = low.sum(-1, dtype=row_dtype).sum(-1, dtype=torch.int32)
    return intersections / unions


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``xyxy`` boxes (inclusive last pixel) around binary masks.

    Args:
        masks: (..., H, W) bool.
    Returns:
        (..., 4) int64; an empty mask gives ``[0, 0, 0, 0]``.
    """
    h, w = masks.shape[-2:]
    device = masks.device
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=device)
    # amax over uint8 is several times faster than any() on CPU.
    as_bytes = masks.view(torch.uint8)
    rows = as_bytes.amax(dim=-1).bool()  # (..., H)
    cols = as_bytes.amax(dim=-2).bool()  # (..., W)
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    top = torch.where(rows, ys, h).amin(dim=-1)
    bottom = torch.where(rows, ys, -1).amax(dim=-1)
    left = torch.where(cols, xs, w).amin(dim=-1)
    right = torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)  # (..., 4)
    empty = ~rows.any(dim=-1)
    return boxes.masked_fill(empty[..., None], 0)


def box_xyxy_to_xywh(box: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(..., 4) ``xyxy`` -> ``xywh`` (same type and dtype)."""
    out: Any = box.clone() if isinstance(box, torch.Tensor) else box.copy()
    out[..., 2] = box[..., 2] - box[..., 0]
    out[..., 3] = box[..., 3] - box[..., 1]
    return out


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) ``xyxy`` -> (N,) areas ``(x1 - x0) * (y1 - y0)``, same dtype."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """Which boxes touch a crop border that is not also an image border.

    Masks cut by a crop border are partial objects; the full-image pass (or a
    neighbouring crop) sees them whole, so the AMG drops them.

    Args:
        boxes: (N, 4) ``xyxy`` in crop pixels.
        crop_box / orig_box: ``xyxy`` of the crop and of the full image, full-image pixels.
    Returns:
        (N,) bool, True where any side is within ``atol`` pixels of a crop-only border.
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()  # (N, 4) full-image pixels
    near_crop = (boxes - crop[None]).abs() <= atol
    near_image = (boxes - orig[None]).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift (..., 4) ``xyxy`` boxes from crop to full-image pixels."""
    x0, y0 = crop_box[0], crop_box[1]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift (..., 2) ``(x, y)`` points from crop to full-image pixels."""
    return points + torch.tensor([crop_box[0], crop_box[1]], device=points.device)


def uncrop_masks(
    masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> torch.Tensor:
    """Zero-pad (..., h, w) crop masks to (..., orig_h, orig_w) at the crop position."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)  # (left, right, top, bottom)
    return torch.nn.functional.pad(masks, pad, value=0)


# --------------------------------------------------------------------------- RLE


def mask_to_rle(masks: torch.Tensor) -> list[Rle]:
    """Uncompressed column-major RLEs of binary masks (pycocotools layout).

    Args:
        masks: (N, H, W) bool, any device.
    Returns:
        N dicts ``{"size": [H, W], "counts": [...]}``; counts alternate background /
        foreground runs and always start with a (possibly 0) background run.
    """
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(n, h * w)  # (N, HW) column-major
    mask_idx, pos = (flat[:, 1:] != flat[:, :-1]).nonzero(as_tuple=True)
    per_mask = torch.bincount(mask_idx, minlength=n).cpu().tolist()
    changes = (pos + 1).cpu().split(per_mask)
    starts_foreground = flat[:, 0].cpu().tolist()
    rles = []
    for i in range(n):
        bounds = torch.cat([torch.tensor([0]), changes[i], torch.tensor([h * w])])
        counts = [0] if starts_foreground[i] else []
        counts.extend(bounds.diff().tolist())
        rles.append({"size": [h, w], "counts": counts})
    return rles


def rle_to_mask(rle: Rle) -> np.ndarray:
    """Decode an uncompressed RLE to an (H, W) bool array (C-contiguous)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(counts)) % 2 == 1  # background, foreground, ...
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, expected {h * w} for size {[h, w]}")
    return np.ascontiguousarray(flat.reshape(w, h).T)


def area_from_rle(rle: Rle) -> int:
    """Number of foreground pixels of an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: Rle) -> Rle:
    """Uncompressed RLE -> compressed COCO RLE with a JSON-friendly ``str`` counts."""
    h, w = rle["size"]
    encoded = coco_mask.frPyObjects(rle, h, w)
    encoded["counts"] = encoded["counts"].decode("utf-8")
    return encoded


# --------------------------------------------------------------------------- cleanup


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """Fill small holes or drop small islands of a binary mask (8-connectivity).

    ``holes``: background components smaller than ``area_thresh`` become foreground
    (a background region touching the border counts too). ``islands``: foreground
    components smaller than ``area_thresh`` are removed; if all are small, the largest
    is kept.

    Args:
        mask: (H, W) bool.
    Returns:
        the (H, W) bool mask and whether any component was below the threshold.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill_holes = mode == "holes"
    # Components of the pixels we may change: background for holes, foreground for islands.
    working = np.ascontiguousarray(mask != fill_holes, dtype=np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the complement
    small = [i + 1 for i, size in enumerate(sizes) if size < area_thresh]
    if not small:
        return mask, False
    if fill_holes:
        # Label 0 (the original foreground) plus the small holes.
        keep_labels = [0, *small]
    else:
        keep_labels = [i for i in range(1, n_labels) if i not in set(small)]
        if not keep_labels:
            keep_labels = [int(np.argmax(sizes)) + 1]
    return np.isin(labels, keep_labels), True


# --------------------------------------------------------------------------- NMS


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression with ``torchvision.ops.nms`` semantics.

    Boxes are visited by score, descending, ties in index order (stable sort); a box
    is dropped when its IoU with an already kept box is ``> iou_threshold``. IoUs are
    computed in float32 like torchvision's CPU kernel (area = ``(x1-x0)*(y1-y0)``).

    Args:
        boxes: (N, 4) float ``xyxy``; scores: (N,) float.
    Returns:
        (K,) int64 indices of kept boxes, by decreasing score, on ``boxes.device``.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms expects boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} "
            f"and {tuple(scores.shape)}"
        )
    device = boxes.device
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores.cpu(), descending=True, stable=True).indices
    # The greedy loop is sequential: run it in numpy float32 on the CPU.
    x0, y0, x1, y1 = boxes.detach().cpu().float()[order].numpy().T.copy()  # (N,) each
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(n, dtype=bool)
    kept = []
    zero = np.float32(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n):
            if suppressed[i]:
                continue
            kept.append(i)
            rest = slice(i + 1, n)
            w = np.maximum(zero, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
            h = np.maximum(zero, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
            inter = w * h
            iou = inter / (areas[i] + areas[rest] - inter)  # float32
            # torchvision compares the float32 IoU against the double threshold.
            suppressed[rest] |= iou.astype(np.float64) > iou_threshold
    return order[torch.tensor(kept, dtype=torch.int64)].to(device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS applied independently per category ``idxs``, as ``torchvision.ops.batched_nms``.

    torchvision switches strategy by size (a per-category loop followed by a re-sort
    with torch's default, unstable sort above 4000 box coordinates on CPU / 20000 on
    GPU; a coordinate offset trick below). Equal scores can come out in a different
    order in the two strategies, so both are mirrored to keep the AMG output order.

    Args:
        boxes: (N, 4) float ``xyxy``; scores: (N,) float; idxs: (N,) int categories.
    Returns:
        (K,) int64 kept indices by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 20000):
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for category in torch.unique(idxs):
            members = torch.where(idxs == category)[0]
            keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        keep = torch.where(keep_mask)[0]
        return keep[scores[keep].sort(descending=True).indices]
    # Offset each category far away so boxes of different categories never overlap.
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))  # (N,)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
