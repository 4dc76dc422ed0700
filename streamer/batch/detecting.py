"""Detector seeding for the batch `track` / `track-many` commands (`--detector`).

The same rule as the service (`streamer.sessions.detection.detect_steps`): on frame 0 and
every `every_n_frames` frames, detections matching a tracked object (box IoU >= `iou`) keep
its id, the others become new objects; labels go to the writers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sam2_video import FrameResult, StreamingSession
from sam2_video.detect import ObjectLabel, load_detector
from sam2_video.utils.steps import drain
from streamer.protocol import DetectOptions, ErrorCode, ProtocolError
from streamer.sessions.detection import SessionDetection, detect_steps

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchDetect:
    """What to detect in a batch run: the detector (what `load_detector` takes; a string
    travels to Ray workers) and the `detect` options (classes / text, every_n_frames,
    min_score, iou)."""

    detector: str | Callable
    options: DetectOptions


class FrameDetector:
    """Runs a `BatchDetect` over one video's frames; `labels` is what the writers show."""

    def __init__(self, plan: BatchDetect, device: str) -> None:
        options = plan.options
        self.options = options
        self.detector = load_detector(
            plan.detector,
            classes=list(options.classes) if options.classes else None,
            text=options.text,
            min_score=0.0,
            device=device,
        )
        self.state = SessionDetection(options=options)
        self.labels: dict[int, ObjectLabel] = self.state.labels
        self.failures = 0

    def apply(self, session: StreamingSession, image: np.ndarray) -> FrameResult | None:
        """Detect on the session's current frame when due; the new result, or None when
        nothing ran. image: (H, W, 3) uint8 RGB of that frame."""
        if not self.state.due(session.frame_idx):
            return None
        steps = detect_steps(session, self.detector, image, self.options, self.labels)
        try:
            return drain(steps).result
        except ProtocolError as exc:
            if exc.code is ErrorCode.DETECTION_FAILED:
                self.failures += 1
            logger.warning("frame %d: %s", session.frame_idx, exc)
            return session.current_result()
