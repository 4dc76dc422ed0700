"""Masks as polygons: the YOLO segmentation label format (one polygon per object).

A YOLO segmentation label line is `class x1 y1 x2 y2 ...`, with coordinates normalised by
the image width and height. An object in several pieces becomes one polygon whose pieces are
joined by zero-width bridges (out along a shortest link, around the piece, back the same
way), so that filling the polygon gives the pieces back.
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_to_polygon(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool mask -> (K, 2) float32 (x, y) pixel polygon of its outer boundaries
    (holes are not kept); (0, 2) for an empty mask."""
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    pieces = [c.reshape(-1, 2) for c in contours if len(c) > 0]
    if not pieces:
        return np.zeros((0, 2), np.float32)
    pieces.sort(key=len, reverse=True)
    polygon = pieces[0]
    for piece in pieces[1:]:
        # Closest pair of points between what is joined so far and the next piece.
        d = ((polygon[:, None, :] - piece[None, :, :]) ** 2).sum(-1)  # (P, Q)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        around = np.concatenate([piece[j:], piece[: j + 1]])  # from j around back to j
        polygon = np.concatenate([polygon[: i + 1], around, polygon[i:]])
    return polygon.astype(np.float32)


def polygon_to_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 2) (x, y) pixel polygon -> (H, W) bool mask of its filled inside and boundary."""
    mask = np.zeros((height, width), np.uint8)
    if len(polygon) >= 3:
        points = np.round(np.asarray(polygon, np.float64)).astype(np.int32)
        cv2.fillPoly(mask, [points], 1)
        cv2.polylines(mask, [points], True, 1)
    return mask.astype(bool)


def yolo_segment_line(class_id: int, mask: np.ndarray) -> str | None:
    """`"class x1 y1 ..."` with coordinates normalised to [0, 1], or None when the mask has
    no polygon of at least 3 points (such a row is no valid label)."""
    polygon = mask_to_polygon(mask)
    if len(polygon) < 3:
        return None
    h, w = mask.shape
    normalised = np.clip(polygon / np.array([w, h], np.float32), 0.0, 1.0)
    return f"{int(class_id)} " + " ".join(f"{v:.6f}" for v in normalised.reshape(-1))
