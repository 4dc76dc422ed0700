"""Ultralytics YOLO detectors (`yolov8n.pt`, `yolo11n.pt`, YOLO-World with text classes).

Ultralytics is AGPL-3.0 and optional (`pip install -e ".[ultralytics]"`): it is imported here
only, when a detector is built.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from sam2_video.detect.types import Detections, DetectorError

logger = logging.getLogger(__name__)


def _import_yolo():
    from sam2_video.detect.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # Ultralytics' predictor imports torchvision
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise DetectorError(
            "YOLO detectors need Ultralytics (AGPL-3.0): pip install -e '.[ultralytics]'"
        ) from exc
    return YOLO


class YoloDetector:
    """An Ultralytics model as a `Detector`.

    model: a `.pt` file, an Ultralytics asset name (`yolov8n.pt`, downloaded by Ultralytics
        when missing), or a model `.yaml` (random weights; tests). classes: keep only these
        class names; a YOLO-World model is prompted with them instead (`set_classes`).
    min_score, iou, imgsz, max_det: Ultralytics' `conf`, `iou` (NMS), `imgsz`, `max_det`.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        classes: list[str] | None = None,
        min_score: float = 0.25,
        iou: float = 0.7,
        imgsz: int = 640,
        max_det: int = 300,
        device: str | torch.device = "cpu",
    ) -> None:
        path = Path(model)
        if path.parent != Path(".") and not path.exists():
            raise DetectorError(f"detector model file not found: {path}")
        YOLO = _import_yolo()
        try:
            self.model = YOLO(str(model))
        except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
            raise DetectorError(f"cannot load the YOLO model {str(model)!r}: {exc}") from exc
        self.device = str(device)
        self.min_score, self.iou, self.imgsz, self.max_det = min_score, iou, imgsz, max_det
        self.class_filter: list[int] | None = None
        if classes and hasattr(self.model, "set_classes") and "world" in str(model).lower():
            self.model.set_classes(list(classes))  # YOLO-World: the text is the vocabulary
        elif classes:
            by_name = {str(v).lower(): int(k) for k, v in self.model.names.items()}
            unknown = [c for c in classes if c.lower() not in by_name]
            if unknown:
                raise DetectorError(
                    f"{str(model)!r} has no class {unknown}; it knows "
                    f"{', '.join(sorted(by_name)[:20])}{' ...' if len(by_name) > 20 else ''}"
                )
            self.class_filter = [by_name[c.lower()] for c in classes]
        self.names = {int(k): str(v) for k, v in self.model.names.items()}

    def __call__(self, image: np.ndarray) -> Detections:
        """image: (H, W, 3) uint8 RGB -> detections in its pixels."""
        result = self.model.predict(
            np.ascontiguousarray(image[..., ::-1]),  # Ultralytics reads numpy images as BGR
            conf=self.min_score,
            iou=self.iou,
            imgsz=self.imgsz,
            max_det=self.max_det,
            classes=self.class_filter,
            device=self.device,
            verbose=False,
        )[0]
        boxes = result.boxes
        return Detections(
            boxes.xyxy.cpu().numpy(),
            boxes.cls.cpu().numpy(),
            boxes.conf.cpu().numpy(),
            self.names,
        )
