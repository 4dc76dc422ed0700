"""The `segment` command: automatic masks for one image, written as COCO-style JSON + overlay.

Outputs for `photo.jpg` in `out_dir`:
* `photo.json` - SA-1B style record: `image` (file_name, width, height) and `annotations`, one per
  mask with `id`, `segmentation` (COCO RLE: `size` [H, W], `counts` str), `bbox` (XYWH pixels),
  `area`, `predicted_iou`, `stability_score`, `point_coords` ([[x, y]] pixels), `crop_box` (XYWH).
* `photo_overlay.png` - the image with every mask blended in its own colour and outlined
  (`streamer.overlay`; the colour follows the annotation id).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm import tqdm

from sam2_video.build import build_sam2, check_model, ensure_model_checkpoint
from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from streamer.overlay import OverlayStyle, draw_overlay

logger = logging.getLogger(__name__)

# SAM2AutomaticMaskGenerator keyword arguments the command exposes (official names).
AMG_PARAMETERS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "mask_threshold",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_overlap_ratio",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
    "use_m2m",
    "multimask_output",
)


class ImageReadError(ValueError):
    """The input image is missing or cannot be decoded."""


class DeviceUnavailableError(ValueError):
    """The requested torch device does not exist on this machine."""


class InvalidOptionError(ValueError):
    """A mask generator option the generator rejects (e.g. a non-positive grid size)."""


class OutputWriteError(OSError):
    """The output folder or files cannot be written."""


@dataclass(frozen=True)
class SegmentResult:
    json_path: Path
    overlay_path: Path
    num_masks: int


def load_image_rgb(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (grey and alpha images become 3-channel)."""
    try:
        # np.fromfile + imdecode, unlike cv2.imread, also handles non-ASCII paths everywhere.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageReadError(f"cannot decode image {path}: not an image format OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resolve_device(device: str | None) -> torch.device:
    """`None` -> CUDA when available, else CPU; an explicit CUDA request must be satisfiable."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("--device cuda was requested but CUDA is not available")
    return resolved


def segment_image(
    image_path: Path,
    *,
    out_dir: Path,
    model: str = "sam2.1_hiera_t",
    checkpoint: Path | None = None,
    download: bool = False,
    device: str | None = None,
    precision: str = "auto",
    amg_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> SegmentResult:
    """Run the automatic mask generator on one image and write `<stem>.json` + overlay PNG.

    progress: show a progress bar (stderr) over the generator's slices (crops, point batches).
    precision: auto | fp32 | bf16 | fp16 (`sam2_video.precision`).

    amg_options: SAM2AutomaticMaskGenerator keyword arguments (a subset of AMG_PARAMETERS);
        missing ones keep the generator's defaults.
    Raises ImageReadError, DeviceUnavailableError, InvalidOptionError, ConfigError (unknown
    model), CheckpointNotFoundError / CheckpointDownloadError, the builder's CheckpointError
    (a checkpoint that does not fit the model) and OutputWriteError; the image, model name,
    device, checkpoint and output folder are checked before any heavy work.
    """
    options = dict(amg_options or {})
    unknown = sorted(set(options) - set(AMG_PARAMETERS))
    if unknown:
        raise InvalidOptionError(f"unknown mask generator option(s): {unknown}")
    image = load_image_rgb(image_path)  # (H, W, 3) uint8 RGB
    check_model(model)
    torch_device = resolve_device(device)
    checkpoint_path = ensure_model_checkpoint(model, checkpoint, download)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot write to {out_dir}: {exc}") from exc

    sam = build_sam2(model, checkpoint=checkpoint_path, device=torch_device, precision=precision)
    try:
        generator = SAM2AutomaticMaskGenerator(sam, output_mode="coco_rle", **options)
    except ValueError as exc:
        raise InvalidOptionError(f"invalid mask generator option: {exc}") from exc
    masks = _generate_with_progress(generator, image, Path(image_path).name, progress)
    logger.info("%s: %d masks", image_path, len(masks))

    height, width = image.shape[:2]
    record = coco_record(masks, file_name=Path(image_path).name, height=height, width=width)
    record["info"] = {
        "model": sam.config.name,
        "checkpoint": str(checkpoint_path),
        "mask_generator": options,
    }
    overlay = render_overlay(image, record["annotations"])  # (H, W, 3) uint8 RGB
    stem = Path(image_path).stem
    json_path = out_dir / f"{stem}.json"
    overlay_path = out_dir / f"{stem}_overlay.png"
    try:
        json_path.write_text(json.dumps(record, indent=1))
    except OSError as exc:
        raise OutputWriteError(f"cannot write {json_path}: {exc}") from exc
    if not cv2.imwrite(str(overlay_path), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        raise OutputWriteError(f"cannot write {overlay_path}")
    return SegmentResult(json_path, overlay_path, len(masks))


def _generate_with_progress(
    generator: SAM2AutomaticMaskGenerator, image: np.ndarray, name: str, progress: bool
) -> list[dict[str, Any]]:
    """`generator.generate(image)`, one progress step per image embedding or point batch."""
    steps = generator.generate_steps(image)
    total = generator.num_steps(image.shape[:2])
    with tqdm(
        total=total,
        unit="batch",
        desc=name,
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            bar.update()


def coco_record(
    masks: Sequence[Mapping[str, Any]], *, file_name: str, height: int, width: int
) -> dict[str, Any]:
    """SA-1B style JSON record from the generator's `coco_rle` output, ids 1..N in its order."""
    annotations = []
    for index, mask in enumerate(masks, start=1):
        rle = mask["segmentation"]
        counts = rle["counts"]
        annotations.append(
            {
                "id": index,
                "segmentation": {
                    "size": [int(s) for s in rle["size"]],
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                },
                "bbox": _plain(mask["bbox"]),
                "area": int(mask["area"]),
                "predicted_iou": float(mask["predicted_iou"]),
                "stability_score": float(mask["stability_score"]),
                "point_coords": _plain(mask["point_coords"]),
                "crop_box": _plain(mask["crop_box"]),
            }
        )
    return {
        "image": {"file_name": file_name, "width": int(width), "height": int(height)},
        "annotations": annotations,
    }


def render_overlay(image: np.ndarray, annotations: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Draw each RLE mask onto a copy of `image` ((H, W, 3) uint8 RGB), coloured by its id.

    Largest masks are drawn first so smaller ones stay visible on top of them.
    """
    style = OverlayStyle(draw_ids=False)  # ids would clutter hundreds of AMG masks
    canvas = image
    # One mask at a time: only one full-resolution mask is decoded at once.
    for ann in sorted(annotations, key=lambda ann: ann["area"], reverse=True):
        mask = mask_utils.decode(dict(ann["segmentation"]))  # (H, W) uint8 {0, 1}
        canvas = draw_overlay(canvas, [mask], [ann["id"]], style=style)
    return canvas.copy() if canvas is image else canvas


def _plain(value: Any) -> Any:
    """Numpy/torch numbers and arrays -> JSON-serialisable Python lists and scalars."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
