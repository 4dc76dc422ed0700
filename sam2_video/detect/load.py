"""`load_detector`: one entry point from a name, path or callable to a `Detector`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from sam2_video.detect.types import Detector, DetectorError

# Files Ultralytics builds or loads.
_YOLO_SUFFIXES = (".pt", ".yaml", ".yml")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# "package.module:function": a user's detector callable, imported.
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _import(spec: str) -> Callable:
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DetectorError(f"cannot import the detector {spec!r}: {exc}") from exc


def load_detector(
    detector: str | Path | Detector | Callable,
    *,
    classes: list[str] | None = None,
    text: str | None = None,
    min_score: float = 0.25,
    iou: float = 0.7,
    imgsz: int = 640,
    max_det: int = 300,
    device: str | torch.device = "cpu",
) -> Detector:
    """A detector from what a user typed.

    detector: a callable (wrapped as is, see `CallableDetector`) or its import path
        ("package.module:function"); a YOLO `.pt` / `.yaml`
        (Ultralytics); or a transformers zero-shot detector by hub id
        (`IDEA-Research/grounding-dino-tiny`) or folder, prompted with `text` or `classes`.
    classes: class names to keep (YOLO) or to look for (text detectors, YOLO-World).
    Raises DetectorError for an unknown name, a missing file or empty text.
    """
    if text is not None and not text.strip():
        raise DetectorError("empty text: name the classes, e.g. 'person. car.'")
    if not isinstance(detector, (str, Path)):
        from sam2_video.detect.callable import CallableDetector

        return CallableDetector(detector)
    spec = str(detector).strip()
    if not spec:
        raise DetectorError("empty detector name")
    if _IMPORT_PATH.match(spec):
        from sam2_video.detect.callable import CallableDetector

        return CallableDetector(_import(spec))
    path = Path(spec)
    if path.suffix.lower() in _YOLO_SUFFIXES:
        from sam2_video.detect.yolo import YoloDetector

        if text is not None:
            from sam2_video.detect.text import parse_text_classes

            classes = parse_text_classes(text)
        return YoloDetector(
            spec,
            classes=classes,
            min_score=min_score,
            iou=iou,
            imgsz=imgsz,
            max_det=max_det,
            device=device,
        )
    if path.is_dir() or (_HUB_ID.match(spec) and not path.exists()):
        if path.is_dir() and not (path / "config.json").is_file():
            raise DetectorError(f"{spec} is a folder without a transformers config.json")
        from sam2_video.detect.text import TextDetector

        return TextDetector(
            spec,
            classes=classes,
            text=text,
            min_score=min_score,
            device=device,
            local_files_only=path.is_dir(),
        )
    raise DetectorError(
        f"unknown detector {spec!r}: give a YOLO .pt or .yaml file (Ultralytics), a "
        "transformers model id or folder (Grounding DINO, OWLv2), or a callable"
    )
