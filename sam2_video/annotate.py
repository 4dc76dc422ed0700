"""`auto_annotate`: YOLO segmentation labels for a folder of images, as Ultralytics offers it.

A detector finds boxes, SAM 2 turns each box into a mask, and each image gets a label file
`<stem>.txt` with one line per object: its class id, then the normalised polygon of its mask
(`sam2_video.utils.polygons`). Same parameters and defaults as `ultralytics.data.annotator.
auto_annotate`, except `sam_model`, whose default is SAM 2's base+ (`sam2_b.pt`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from sam2_video.detect import Detections, Detector, load_detector
from sam2_video.modeling.sam2 import SAM2Model
from sam2_video.predictors.image import SAM2ImagePredictor
from sam2_video.utils.polygons import yolo_segment_line

logger = logging.getLogger(__name__)

# Image suffixes Ultralytics reads (its IMG_FORMATS), lower case.
IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")


@dataclass
class AnnotateReport:
    """What `auto_annotate` did: the label folder, the label files written, the images with
    no detection (no file, as Ultralytics), and the images that failed, with the error."""

    output_dir: Path
    written: list[Path] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    errors: dict[Path, str] = field(default_factory=dict)


def list_images(data: str | Path) -> list[Path]:
    """The images of a folder (sorted, not recursive) or a single image file."""
    path = Path(data)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no image or folder at {path}")
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def default_output_dir(data: str | Path) -> Path:
    """Ultralytics' default: `<data>_auto_annotate_labels` beside the data."""
    data = Path(data)
    return data.parent / f"{data.stem}_auto_annotate_labels"


def annotate_image(
    predictor: SAM2ImagePredictor,
    detector: Detector | Callable[[np.ndarray], Detections],
    image: np.ndarray,
    classes: list[int] | None = None,
) -> tuple[Detections, np.ndarray]:
    """Detections of one image and their SAM 2 masks.

    image: (H, W, 3) uint8 RGB. classes: keep only these class ids. Returns the kept
    detections and (N, H, W) bool masks, one per detection (box prompt, single mask).
    """
    found = detector(image)
    if classes is not None:
        found = found.filter(np.isin(found.class_ids, list(classes)))
    h, w = image.shape[:2]
    if len(found) == 0:
        return found, np.zeros((0, h, w), bool)
    predictor.set_image(image)
    boxes = torch.as_tensor(found.boxes, dtype=torch.float32, device=predictor.device)
    masks, _, _ = predictor.predict_torch(None, None, boxes, multimask_output=False)
    return found, masks[:, 0].cpu().numpy()  # (N, H, W) bool


def _read_rgb(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _sam(sam_model, device: str) -> SAM2ImagePredictor:
    if isinstance(sam_model, SAM2ImagePredictor):
        return sam_model
    if isinstance(sam_model, SAM2Model):
        return SAM2ImagePredictor(sam_model)
    from sam2_video.build import build_sam2, ensure_model_checkpoint

    checkpoint = ensure_model_checkpoint(sam_model, None, download=False)
    return SAM2ImagePredictor(build_sam2(sam_model, checkpoint=checkpoint, device=device))


def auto_annotate(
    data: str | Path,
    det_model: str | Path | Detector | Callable = "yolov8x.pt",
    sam_model: str | Path | SAM2Model | SAM2ImagePredictor = "sam2_b.pt",
    device: str = "",
    conf: float = 0.25,
    iou: float = 0.45,
    imgsz: int = 640,
    max_det: int = 300,
    classes: list[int] | None = None,
    output_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> AnnotateReport:
    """Write YOLO segmentation labels for the images in `data`.

    data: a folder of images or one image. det_model: what `load_detector` takes (a YOLO
    `.pt`, a transformers detector id or folder, a callable). sam_model: a model name
    (`sam2_b.pt`, `sam2.1_hiera_t`, ...), a checkpoint file, or a built model / predictor.
    device: "" picks CUDA when available, else the CPU. conf, iou, imgsz, max_det: the
    detector's score threshold, NMS IoU, input size and detections per image. classes: keep
    only these class ids. output_dir: default `<data>_auto_annotate_labels`.
    A failing image is recorded in the report's `errors` and the run goes on.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    images = list_images(data)
    out = Path(output_dir) if output_dir else default_output_dir(data)
    out.mkdir(parents=True, exist_ok=True)
    detector = load_detector(
        det_model, min_score=conf, iou=iou, imgsz=imgsz, max_det=max_det, device=device
    )
    predictor = _sam(sam_model, device)
    report = AnnotateReport(output_dir=out)
    for path in tqdm(images, desc="auto_annotate", unit="image", disable=not progress):
        try:
            found, masks = annotate_image(predictor, detector, _read_rgb(path), classes)
            rows = [yolo_segment_line(int(c), m) for c, m in zip(found.class_ids, masks)]
            lines = [row for row in rows if row is not None]
            if not lines:
                report.empty.append(path)
                continue
            label = out / f"{path.stem}.txt"
            label.write_text("\n".join(lines) + "\n", encoding="utf-8")
            report.written.append(label)
        except Exception as exc:  # one bad image must not stop a long labelling run
            logger.warning("auto_annotate: %s failed: %s", path, exc)
            report.errors[path] = f"{type(exc).__name__}: {exc}"
    return report
