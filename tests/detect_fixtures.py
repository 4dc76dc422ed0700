"""Detectors for tests, importable by a server under test as "detect_fixtures:<name>"."""

from __future__ import annotations

import numpy as np

from sam2_video.detect import Detections

NAMES = {0: "red", 1: "green"}


def colour_blobs(image: np.ndarray) -> Detections:
    """One detection per colour present: the box around the strongly red pixels ("red", class
    0, score 0.9) and around the strongly green ones ("green", class 1, score 0.8).

    image: (H, W, 3) uint8 RGB. Thresholds leave room for video compression.
    """
    r, g, b = (image[..., c].astype(np.int16) for c in range(3))
    boxes, class_ids, scores = [], [], []
    for class_id, mask, score in (
        (0, (r > 150) & (g < 100) & (b < 100), 0.9),
        (1, (g > 150) & (r < 100) & (b < 100), 0.8),
    ):
        if mask.sum() < 50:
            continue
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        class_ids.append(class_id)
        scores.append(score)
    return Detections(np.array(boxes).reshape(-1, 4), class_ids, scores, NAMES)


def failing(image: np.ndarray) -> Detections:
    raise RuntimeError("detector exploded")
