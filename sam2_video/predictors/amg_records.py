"""The mask generator's last stages on its records: small-region clean-up and annotations."""

from __future__ import annotations

from typing import Any

import torch

from sam2_video.utils.mask_utils import (
    MaskRecords,
    area_from_rle,
    batched_mask_to_box,
    batched_nms,
    box_xyxy_to_xywh,
    coco_encode_rle,
    mask_to_rle,
    remove_small_regions,
    rle_to_mask,
)


def clean_small_regions(records: MaskRecords, min_area: int, nms_thresh: float) -> MaskRecords:
    """Fill holes / remove islands below ``min_area``, then drop new duplicates.

    NMS scores are 1 for untouched masks and 0 for edited ones, so when a cleaned mask
    duplicates an untouched one the untouched mask wins.
    """
    if len(records) == 0:
        return records
    cleaned, scores = [], []
    for rle in records.rles:
        mask, holes_changed = remove_small_regions(rle_to_mask(rle), min_area, "holes")
        mask, islands_changed = remove_small_regions(mask, min_area, "islands")
        cleaned.append(torch.from_numpy(mask))
        scores.append(float(not (holes_changed or islands_changed)))
    masks = torch.stack(cleaned)  # (N, H, W) bool
    boxes = batched_mask_to_box(masks)  # (N, 4)
    keep = batched_nms(
        boxes.float(),
        torch.tensor(scores),
        torch.zeros(len(boxes), dtype=torch.int64),
        iou_threshold=nms_thresh,
    )
    new_boxes = records.boxes.clone()
    for i in keep.tolist():
        if scores[i] == 0.0:
            records.rles[i] = mask_to_rle(masks[i : i + 1])[0]
            new_boxes[i] = boxes[i].to(new_boxes.device)
    records.boxes = new_boxes
    return records.filter(keep)


def to_annotations(records: MaskRecords, output_mode: str) -> list[dict[str, Any]]:
    """The official annotation dicts of `records` (see `SAM2AutomaticMaskGenerator.generate`),
    segmentation as `output_mode` says: binary_mask, coco_rle or uncompressed_rle."""
    boxes_xywh = box_xyxy_to_xywh(records.boxes.cpu().float()).tolist()
    crops_xywh = box_xyxy_to_xywh(records.crop_boxes.cpu().float()).tolist()
    iou_preds = records.iou_preds.cpu().float().tolist()
    stability = records.stability_score.cpu().float().tolist()
    points = records.points.cpu().float().tolist()
    annotations = []
    for i, rle in enumerate(records.rles):
        if output_mode == "binary_mask":
            segmentation: Any = rle_to_mask(rle)
        elif output_mode == "coco_rle":
            segmentation = coco_encode_rle(rle)
        else:
            segmentation = rle
        annotations.append(
            {
                "segmentation": segmentation,
                "area": area_from_rle(rle),
                "bbox": boxes_xywh[i],
                "predicted_iou": iou_preds[i],
                "point_coords": [points[i]],
                "stability_score": stability[i],
                "crop_box": crops_xywh[i],
            }
        )
    return annotations
