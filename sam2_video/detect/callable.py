"""A user's own detector: any callable that returns `Detections` or (boxes, class_ids, scores)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sam2_video.detect.types import Detections, DetectorError


class CallableDetector:
    """Wraps `fn(image) -> Detections | (boxes, class_ids, scores[, names])` as a `Detector`.

    names: class id -> name, used when `fn` returns a tuple without names.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], names: dict[int, str] | None = None):
        if not callable(fn):
            raise DetectorError(f"a detector must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.names = dict(names or {})

    def __call__(self, image: np.ndarray) -> Detections:
        out = self.fn(image)
        if isinstance(out, Detections):
            return (
                out
                if out.names or not self.names
                else Detections(out.boxes, out.class_ids, out.scores, self.names)
            )
        if isinstance(out, tuple) and len(out) in (3, 4):
            names = out[3] if len(out) == 4 else self.names
            if not isinstance(names, dict):
                names = dict(enumerate(names))
            return Detections(out[0], out[1], out[2], names)
        raise DetectorError(
            "a detector callable must return Detections or (boxes, class_ids, scores[, names]), "
            f"got {type(out).__name__}"
        )
