"""Detectors that tell a tracker what to track: boxes, class ids, class names and scores.

`load_detector` builds one from a YOLO file (Ultralytics, optional and AGPL-3.0), a
transformers zero-shot model id or folder with text ("person. car."), or any callable.
Neither Ultralytics nor transformers is imported until a detector of theirs is built.
"""

from sam2_video.detect.load import load_detector
from sam2_video.detect.matching import match_detections
from sam2_video.detect.types import Detections, Detector, DetectorError, ObjectLabel

__all__ = [
    "Detections",
    "Detector",
    "DetectorError",
    "ObjectLabel",
    "load_detector",
    "match_detections",
]
