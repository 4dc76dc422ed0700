"""What a detector returns, and the interface every detector follows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class DetectorError(ValueError):
    """A detector that cannot be built (unknown name, missing file, bad options) or that
    returned something other than detections."""


@dataclass(frozen=True)
class Detections:
    """Objects found on one frame, best first is not required.

    boxes: (N, 4) float32 xyxy, pixels of the frame the detector was given (origin top-left).
    class_ids: (N,) int64 indices into `names`. scores: (N,) float32 in [0, 1].
    names: class id -> class name (all classes the detector knows, not only those found).
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        class_ids = np.asarray(self.class_ids, np.int64).reshape(-1)
        scores = np.asarray(self.scores, np.float32).reshape(-1)
        if not len(boxes) == len(class_ids) == len(scores):
            raise DetectorError(
                f"detections disagree in length: {len(boxes)} boxes, {len(class_ids)} class "
                f"ids, {len(scores)} scores"
            )
        if not np.isfinite(boxes).all() or not np.isfinite(scores).all():
            raise DetectorError("detections hold non-finite boxes or scores")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "names", {int(k): str(v) for k, v in self.names.items()})

    def __len__(self) -> int:
        return len(self.scores)

    def label(self, i: int) -> str:
        """Class name of detection `i` (its id as text when the detector names none)."""
        class_id = int(self.class_ids[i])
        return self.names.get(class_id, str(class_id))

    def filter(self, keep: np.ndarray | Sequence[int]) -> Detections:
        """The detections selected by a boolean mask or an index list, in that order."""
        return Detections(self.boxes[keep], self.class_ids[keep], self.scores[keep], self.names)

    @classmethod
    def empty(cls, names: dict[int, str] | None = None) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), names or {})


@dataclass(frozen=True)
class ObjectLabel:
    """What a detector said a tracked object is: class name, class id and detection score."""

    label: str
    class_id: int
    det_score: float


@runtime_checkable
class Detector(Protocol):
    """Anything that maps a frame to detections.

    image: (H, W, 3) uint8 RGB. Returns boxes in that image's pixels. Implementations hold
    their model and run on their own device; they are called from one thread at a time.
    """

    def __call__(self, image: np.ndarray) -> Detections: ...
