"""The rule that decides whether a proposal is an object already tracked.

One rule for every seeder (detector boxes, automatic-mask boxes): a proposal and a tracked
object are the same object when their boxes overlap with IoU >= `iou_threshold`; pairs are
matched one to one, highest IoU first. Matched proposals keep the tracked object's id; the
others become new objects.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy boxes -> (N, M) float64 IoU (0 where a box has no area)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_detections(
    proposals: np.ndarray, tracked: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """For each proposal box, the index of the tracked box it is, or -1 (a new object).

    proposals: (N, 4), tracked: (M, 4) xyxy pixels of the same frame. iou_threshold in
    (0, 1]. Returns (N,) int64.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    iou = box_iou(proposals, tracked)  # (N, M)
    matched = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.size == 0:
        return matched
    taken = np.zeros(iou.shape[1], dtype=bool)
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < iou_threshold:
            break
        if matched[i] < 0 and not taken[j]:
            matched[i], taken[j] = j, True
    return matched
