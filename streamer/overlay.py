"""Overlay rendering: object masks drawn onto a video frame.

Each object is alpha-blended in its own colour, outlined, and labelled with its id. Colours are
a pure function of the object id, so an object keeps its colour across frames, sessions and
outputs (the live WebRTC track, mp4 files written by the batch CLI).

Everything here is numpy/OpenCV on (H, W, 3) uint8 RGB frames; nothing touches the model.

    from streamer.overlay import OverlayStyle, draw_overlay
    rgb = draw_overlay(frame, result.masks, result.obj_ids)           # (H, W, 3) uint8
    rgb = draw_overlay(frame, masks, ids, style=OverlayStyle(alpha=0.3, draw_ids=False))
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# Golden-ratio hue steps: consecutive ids land far apart on the colour wheel.
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


@dataclass(frozen=True)
class OverlayStyle:
    """How masks are drawn.

    alpha: weight of the object colour inside its mask (0 = invisible, 1 = opaque).
    outline_thickness: contour width in pixels; None scales it with the frame (1 px per 600).
    draw_outline: outline each mask (keeps touching objects apart).
    draw_ids: write each object's id near its mask (top-left of its bounding box).
    """

    alpha: float = 0.5
    outline_thickness: int | None = None
    draw_outline: bool = True
    draw_ids: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.outline_thickness is not None and self.outline_thickness < 1:
            raise ValueError(f"outline_thickness must be >= 1, got {self.outline_thickness}")


@lru_cache(maxsize=1024)
def object_color(obj_id: int) -> tuple[int, int, int]:
    """Stable RGB colour (0-255 each) of an object id: same id, same colour, everywhere."""
    hue = (int(obj_id) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_overlay(
    image: np.ndarray,
    masks: np.ndarray | Sequence[np.ndarray],
    obj_ids: Sequence[int] | np.ndarray,
    *,
    style: OverlayStyle | None = None,
) -> np.ndarray:
    """Draw object masks onto a copy of `image`.

    image: (H, W, 3) uint8 RGB.
    masks: (N, h, w) bool (or 0/1) masks, one per id; masks of another size than the frame
        (e.g. a result computed on a downscaled frame) are resized with nearest neighbour.
    obj_ids: (N,) object ids, which pick the colours (`object_color`) and the labels.
    Returns a new (H, W, 3) uint8 RGB array; `image` is left untouched. Objects are drawn in
    the given order, so later ones appear on top where masks overlap.
    Raises ValueError for a malformed image or mismatched masks/ids.
    """
    style = style or OverlayStyle()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    ids = [int(i) for i in obj_ids]
    if len(masks) != len(ids):
        raise ValueError(f"{len(masks)} masks but {len(ids)} object ids")
    canvas = image.copy()
    if not ids:
        return canvas
    height, width = image.shape[:2]
    thickness = style.outline_thickness or max(1, round(max(height, width) / 600))
    labels: list[tuple[int, int, int]] = []  # (x, y, obj_id) drawn last so outlines stay under
    for mask, obj_id in zip(masks, ids):
        inside = _fit_mask(np.asarray(mask), height, width)  # (H, W) bool
        if not inside.any():
            continue
        color = object_color(obj_id)
        x, y, _, _ = _blend(canvas, inside, color, style.alpha)
        if style.draw_outline:
            contours, _ = cv2.findContours(
                inside.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(canvas, contours, -1, color, thickness, lineType=cv2.LINE_AA)
        if style.draw_ids:
            labels.append((x, y, obj_id))
    for x, y, obj_id in labels:
        _draw_label(canvas, str(obj_id), x, y, object_color(obj_id), height)
    return canvas


def _fit_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) mask -> contiguous (height, width) bool, resizing with nearest neighbour."""
    if mask.ndim != 2:
        raise ValueError(f"each mask must be 2-D, got shape {mask.shape}")
    mask = mask.astype(bool, copy=False)
    if mask.shape != (height, width):
        resized = cv2.resize(mask.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        mask = resized.astype(bool)
    return np.ascontiguousarray(mask)


def _blend(
    canvas: np.ndarray, inside: np.ndarray, color: tuple[int, int, int], alpha: float
) -> tuple[int, int, int, int]:
    """canvas = (1 - alpha) * canvas + alpha * color where `inside`, in place.

    Works on the mask's bounding box only (boolean indexing of a whole frame is several times
    slower); returns that box as (x, y, w, h).
    """
    mask_u8 = inside.view(np.uint8)  # (H, W) {0, 1}, no copy
    x, y, w, h = cv2.boundingRect(mask_u8)
    roi = canvas[y : y + h, x : x + w]  # (h, w, 3) view into canvas
    # OpenCV with a scalar colour, not numpy broadcasting: ~10x faster at video rates.
    tint = (color[0] * alpha, color[1] * alpha, color[2] * alpha, 0.0)
    blended = cv2.add(cv2.convertScaleAbs(roi, alpha=1.0 - alpha), tint)  # (h, w, 3) uint8
    cv2.copyTo(blended, np.ascontiguousarray(mask_u8[y : y + h, x : x + w]), roi)
    return x, y, w, h


def _draw_label(
    canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], frame_height: int
) -> None:
    """Object id in `color` on a dark box at the mask's top-left corner, kept inside the frame."""
    scale = max(0.4, frame_height / 720)
    weight = max(1, round(scale * 1.5))
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    pad = max(2, round(3 * scale))
    box_w, box_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    x = int(min(max(x, 0), max(canvas.shape[1] - box_w, 0)))
    y = int(min(max(y, 0), max(canvas.shape[0] - box_h, 0)))
    cv2.rectangle(canvas, (x, y), (x + box_w, y + box_h), (0, 0, 0), thickness=cv2.FILLED)
    origin = (x + pad, y + pad + text_h)
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, weight, cv2.LINE_AA)
