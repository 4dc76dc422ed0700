"""Turning a `FrameResult` into protocol masklets (COCO RLE, bbox, area, score).

Runs on the device's `DeviceScheduler` thread, so the event loop only serialises ready messages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import cv2
import numpy as np
from pycocotools import mask as mask_api

from sam2_video import FrameResult
from sam2_video.detect.types import ObjectLabel
from streamer.protocol import CocoRle, ObjectMasklet
from streamer.rle import DEFAULT_MAX_MASK_PIXELS, RleError, rle_runs

__all__ = ["RleError", "decode_rle", "downscale_mask", "encode_rle", "masklets", "rle_runs"]


def encode_rle(mask: np.ndarray) -> CocoRle:
    """(H, W) bool -> COCO RLE with `counts` as a string."""
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return CocoRle(size=(int(rle["size"][0]), int(rle["size"][1])), counts=rle["counts"].decode())


def decode_rle(rle: CocoRle, *, max_pixels: int = DEFAULT_MAX_MASK_PIXELS) -> np.ndarray:
    """COCO RLE -> (H, W) bool, validated first with `rle_runs` (raises RleError)."""
    rle_runs(rle.size, rle.counts, max_pixels=max_pixels)
    h, w = rle.size
    try:
        mask = mask_api.decode({"size": [h, w], "counts": rle.counts.encode()})
    except Exception as exc:  # pycocotools raises bare exceptions on bad strings
        raise RleError(f"cannot decode RLE: {exc}") from exc
    return mask.view(bool)


def downscale_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) bool -> (ceil(H/f), ceil(W/f)) bool: a pixel is set when most of its cell is."""
    if factor == 1:
        return mask
    h, w = mask.shape
    size = (max(1, math.ceil(w / factor)), max(1, math.ceil(h / factor)))  # cv2 wants (W, H)
    small = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA)
    return small >= 128


def masklets(
    result: FrameResult,
    *,
    obj_ids: Iterable[int] | None = None,
    mask_downscale: int = 1,
    labels: Mapping[int, ObjectLabel] | None = None,
) -> list[ObjectMasklet]:
    """Masklets of `result`'s objects (all, or those in `obj_ids`, in the result's order).

    labels: obj_id -> what a detector said it is (label, class_id, det_score on the masklet).
    """
    wanted = None if obj_ids is None else set(obj_ids)
    labels = labels or {}
    small = None
    if mask_downscale > 1 and len(result.obj_ids):
        h, w = result.masks.shape[1:]
        # From the model's low-res logits straight to the size asked for, not via H x W.
        small = result.masks_at(
            (max(1, math.ceil(h / mask_downscale)), max(1, math.ceil(w / mask_downscale)))
        )
    out = []
    for i, obj_id in enumerate(result.obj_ids):
        if wanted is not None and obj_id not in wanted:
            continue
        mask = result.masks[i]
        area = int(mask.sum())
        if area:
            x0, y0, x1, y1 = (float(v) for v in result.boxes[i])
            bbox = (x0, y0, x1 - x0 + 1.0, y1 - y0 + 1.0)  # boxes are inclusive pixel extents
        else:
            bbox = (0.0, 0.0, 0.0, 0.0)
        score = 1.0 / (1.0 + math.exp(-max(min(float(result.object_scores[i]), 50.0), -50.0)))
        out.append(
            ObjectMasklet(
                obj_id=int(obj_id),
                rle=encode_rle(mask if small is None else small[i]),
                bbox=bbox,
                area=area,
                score=score,
                iou=float(result.ious[i]),
                **_label_fields(labels.get(int(obj_id))),
            )
        )
    return out


def _label_fields(label: ObjectLabel | None) -> dict:
    if label is None:
        return {}
    return {"label": label.label, "class_id": label.class_id, "det_score": label.det_score}
