"""Automatic mask generation: segment everything in an image with a grid of point prompts.

Pipeline (same maths and order as the official SAM 2 generator):
1. For each crop of the crop pyramid (layer 0 = full image), embed the crop once and
   prompt it with a regular point grid, ``points_per_batch`` points at a time.
2. Per batch: optional mask-to-mask refinement, keep masks with predicted IoU
   ``> pred_iou_thresh`` and stability ``>= stability_score_thresh``, binarise, drop masks
   touching an inner crop border, encode as RLE in full-image coordinates.
3. Box NMS inside each crop (by predicted IoU), then across crops (smaller crops win).
4. Optional ``min_mask_region_area`` cleanup (holes filled / islands removed, then NMS
   preferring untouched masks). The official SAM 2 CPU path silently skips it; we run it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model
from sam2_video.precision import inference_method
from sam2_video.predictors.amg_records import clean_small_regions, to_annotations
from sam2_video.predictors.image import LOW_RES_LOGIT_CLAMP, SAM2ImagePredictor
from sam2_video.utils.mask_utils import (
    MaskRecords,
    batched_mask_to_box,
    batched_nms,
    box_area,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from sam2_video.utils.steps import drain
from sam2_video.utils.transforms import validate_image

logger = logging.getLogger(__name__)

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Full-size mask logits scored per chunk (see `_score_and_binarize`): ~8 MB of float32.
PIXELS_PER_CHUNK = 2**21


class SAM2AutomaticMaskGenerator:
    """Generates masks for every object in an image (the official SAM 2 AMG API).

    Args:
        predictor_or_model: a `SAM2ImagePredictor`, or a `SAM2Model` (an ``nn.Module``)
            which is then wrapped in a new predictor.
        points_per_side: grid points per image side (``points_per_side**2`` prompts on the
            full image); exclusive with ``point_grids``.
        points_per_batch: prompts run through the mask decoder at once (memory vs speed).
        pred_iou_thresh: keep masks whose predicted IoU is ``>`` this, in [0, 1].
        stability_score_thresh: keep masks whose stability is ``>=`` this, in [0, 1].
        stability_score_offset: logit offset around ``mask_threshold`` for the stability score.
        mask_threshold: logit threshold that binarises masks.
        box_nms_thresh: box IoU above which duplicates inside a crop are dropped, in [0, 1].
        crop_n_layers: extra crop layers; layer i has ``(2**i)**2`` crops.
        crop_nms_thresh: box IoU for duplicates between crops, in [0, 1].
        crop_overlap_ratio: crop overlap as a fraction of the short image side, in [0, 1).
        crop_n_points_downscale_factor: layer i uses ``points_per_side / factor**i`` points.
        point_grids: explicit (P_i, 2) grids of normalised (x, y) in [0, 1], one per layer.
        min_mask_region_area: if > 0, fill holes and remove islands smaller than this (pixels).
        output_mode: ``binary_mask`` (HxW bool), ``uncompressed_rle`` or ``coco_rle``.
        use_m2m: refine each mask once by re-prompting with its own low-res logits.
        multimask_output: three masks per point (else one, with the dynamic fallback).
    """

    def __init__(
        self,
        predictor_or_model: SAM2ImagePredictor | SAM2Model,
        *,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None and points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio}")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if crop_n_points_downscale_factor < 1:
            raise ValueError(
                f"crop_n_points_downscale_factor must be >= 1, got {crop_n_points_downscale_factor}"
            )
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")

        if points_per_side is not None:
            if int(points_per_side / crop_n_points_downscale_factor**crop_n_layers) < 1:
                raise ValueError(
                    f"points_per_side={points_per_side} leaves no points in crop layer "
                    f"{crop_n_layers} with crop_n_points_downscale_factor="
                    f"{crop_n_points_downscale_factor}"
                )
            grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        elif point_grids is None:
            raise ValueError("give points_per_side or point_grids")
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) < crop_n_layers + 1:
                raise ValueError(
                    f"point_grids has {len(grids)} grids, need one per crop layer "
                    f"({crop_n_layers + 1})"
                )
            for g in grids:
                if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0:
                    raise ValueError(f"each point grid must have shape (P, 2), got {g.shape}")
                if not ((g >= 0) & (g <= 1)).all():
                    raise ValueError("point_grids must hold normalised (x, y) in [0, 1]")
        self.point_grids: list[np.ndarray] = grids

        if isinstance(predictor_or_model, torch.nn.Module):  # a model (compiled ones too)
            predictor_or_model = SAM2ImagePredictor(predictor_or_model)
        self.predictor = predictor_or_model
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output
        self._low_res_logits = True  # set by `_decode`: whether its logits need `_upscale`

    @property
    def model(self) -> SAM2Model | None:
        """The predictor's model (whose precision the generator runs with)."""
        return getattr(self.predictor, "model", None)

    @inference_method
    def generate(
        self, image: np.ndarray, features: ImageFeatures | None = None
    ) -> list[dict[str, Any]]:
        """Segment everything in ``image``.

        Args:
            image: (H, W, 3) uint8 RGB.
            features: the image's backbone features (``model.forward_image``, batch 1), e.g. a
                video frame's already computed by the tracker; the full-image crop then uses
                them instead of embedding the image again (smaller crops still embed theirs).
        Returns:
            one dict per mask, in the official order (by predicted IoU within a crop; with
            crop layers, masks from smaller crops first), with keys
            ``segmentation`` (H, W) bool array or an RLE dict (see ``output_mode``),
            ``area`` int pixels, ``bbox`` [x, y, w, h] floats, ``predicted_iou`` float,
            ``point_coords`` [[x, y]] prompt in image pixels, ``stability_score`` float,
            ``crop_box`` [x, y, w, h] of the crop the mask came from.
        """
        return drain(self.generate_steps(image, features))

    def num_steps(self, image_hw: tuple[int, int]) -> int:
        """How many slices `generate_steps` runs for an image of (H, W) pixels: per crop, one
        image embedding and one per batch of `points_per_batch` points."""
        crop_boxes, layer_idxs = generate_crop_boxes(
            image_hw, self.crop_n_layers, self.crop_overlap_ratio
        )
        batches = [
            -(-len(self.point_grids[layer]) // self.points_per_batch) for layer in layer_idxs
        ]
        return len(crop_boxes) + sum(batches)

    @inference_method
    def generate_steps(
        self, image: np.ndarray, features: ImageFeatures | None = None
    ) -> Generator[None, None, list[dict[str, Any]]]:
        """`generate` in slices, for a scheduler that interleaves it with other work
        (`features` as in `generate`).

        A generator: each `next()` runs one slice (a crop's image embedding, or one batch of
        `points_per_batch` points) and yields None; when exhausted it returns `generate`'s
        annotations (`StopIteration.value`).
        """
        validate_image(image)
        records = yield from self._generate_records(image, features)
        return to_annotations(records, self.output_mode)

    # ------------------------------------------------------------------ pipeline

    def _generate_records(
        self, image: np.ndarray, features: ImageFeatures | None
    ) -> Generator[None, None, MaskRecords]:
        orig_hw = (image.shape[0], image.shape[1])
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_hw, self.crop_n_layers, self.crop_overlap_ratio
        )
        crops = []
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            crop_features = features if layer == 0 else None
            crops.append(
                (yield from self._process_crop(image, crop_box, layer, orig_hw, crop_features))
            )
        records = MaskRecords.cat(crops)
        if len(crop_boxes) > 1:
            # The same object seen in several crops: prefer the smallest crop.
            scores = 1 / box_area(records.crop_boxes)
            keep = batched_nms(
                records.boxes.float(),
                scores.to(records.boxes.device),
                torch.zeros_like(records.boxes[:, 0]),
                iou_threshold=self.crop_nms_thresh,
            )
            records = records.filter(keep)
        if self.min_mask_region_area > 0:
            records = clean_small_regions(
                records,
                self.min_mask_region_area,
                max(self.box_nms_thresh, self.crop_nms_thresh),
            )
        logger.debug("AMG kept %d masks from %d crops", len(records), len(crop_boxes))
        return records

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer: int,
        orig_hw: tuple[int, int],
        features: ImageFeatures | None = None,
    ) -> Generator[None, None, MaskRecords]:
        x0, y0, x1, y1 = crop_box
        crop_h, crop_w = y1 - y0, x1 - x0
        if features is not None:  # layer 0: the crop is the whole image
            self.predictor.set_features(features, orig_hw)
        else:
            self.predictor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
        yield
        points = self.point_grids[layer] * np.array([[crop_w, crop_h]])  # (P, 2) crop pixels
        batches = []
        for i in range(0, len(points), self.points_per_batch):
            batches.append(
                self._process_batch(points[i : i + self.points_per_batch], crop_box, orig_hw)
            )
            yield
        self.predictor.reset_predictor()

        records = MaskRecords.cat(batches)
        keep = batched_nms(
            records.boxes.float(),
            records.iou_preds,
            torch.zeros_like(records.boxes[:, 0]),
            iou_threshold=self.box_nms_thresh,
        )
        records = records.filter(keep)
        records.boxes = uncrop_boxes_xyxy(records.boxes, crop_box)
        records.points = uncrop_points(records.points, crop_box)
        return records

    def _process_batch(
        self, points: np.ndarray, crop_box: list[int], orig_hw: tuple[int, int]
    ) -> MaskRecords:
        """points: (B, 2) float64 (x, y) pixels of the current crop."""
        device = self.predictor.device
        orig_h, orig_w = orig_hw
        points_t = torch.as_tensor(points, dtype=torch.float32, device=device)  # (B, 2)
        labels = torch.ones(len(points_t), dtype=torch.int32, device=device)  # (B,)
        low_res, iou_preds, mask_prompts = self._decode(
            points_t[:, None, :], labels[:, None], None, self.multimask_output
        )  # (B, C, h', w'), (B, C), (B, C, S/4, S/4)
        n_per_point = low_res.shape[1]
        low_res = low_res.flatten(0, 1)  # (B*C, h', w')
        iou_preds = iou_preds.flatten(0, 1)  # (B*C,)
        points_t = points_t.repeat_interleave(n_per_point, dim=0)  # (B*C, 2)
        if self.use_m2m:
            low_res, iou_preds = self._refine_with_m2m(points_t, mask_prompts.flatten(0, 1))

        # The predicted IoU does not depend on the resolution and each mask is upscaled on
        # its own, so filtering before upscaling keeps exactly the masks (and values) that
        # filtering afterwards would: most candidates never reach full resolution.
        if self.pred_iou_thresh > 0.0:
            keep = iou_preds > self.pred_iou_thresh
            low_res, iou_preds, points_t = low_res[keep], iou_preds[keep], points_t[keep]
        stability, masks = self._score_and_binarize(low_res)  # (N,), (N', h, w) bool
        if self.stability_score_thresh > 0.0:
            keep = stability >= self.stability_score_thresh
            iou_preds, points_t, stability = iou_preds[keep], points_t[keep], stability[keep]

        boxes = batched_mask_to_box(masks)  # (N, 4) crop pixels
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        masks = uncrop_masks(masks[keep], crop_box, orig_h, orig_w)  # (N', H, W)
        return MaskRecords(
            iou_preds=iou_preds[keep],
            points=points_t[keep],  # still crop pixels: shifted after the crop's NMS
            stability_score=stability[keep],
            boxes=boxes[keep],  # crop pixels, likewise
            rles=mask_to_rle(masks),
            crop_boxes=torch.tensor(crop_box, device=device).expand(len(masks), 4),
        )

    def _score_and_binarize(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Stability scores of all N masks, binary masks of those that pass the threshold.

        logits: (N, h', w') from `_decode`. Returns (N,) float32 stability and (N', h, w) bool
        at crop size for the N' masks with stability >= `stability_score_thresh` (all N when
        the threshold is 0). Masks are upscaled a few at a time (about 2 M pixels) so that
        their full-size logits are scored and binarised while still in cache: ~2.7x faster
        than upscaling all of them first on a 1800x1200 photo.
        """
        h, w = self.predictor.original_size
        step = max(1, PIXELS_PER_CHUNK // (h * w))
        scores, masks = [], []
        for i in range(0, len(logits), step):
            full = self._upscale(logits[i : i + step])  # (k, h, w)
            score = calculate_stability_score(
                full, self.mask_threshold, self.stability_score_offset
            )
            if self.stability_score_thresh > 0.0:
                full = full[score >= self.stability_score_thresh]
            scores.append(score)
            masks.append(full > self.mask_threshold)
        if not scores:
            return logits.new_zeros(0), torch.zeros(0, h, w, dtype=torch.bool, device=logits.device)
        return torch.cat(scores), torch.cat(masks)

    def _decode(
        self, points: Tensor, labels: Tensor, mask_input: Tensor | None, multimask: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the predictor on (B, N, 2) crop-pixel points / (B, N) labels.

        Returns (B, C, h', w') logits, (B, C) IoUs and (B, C, S/4, S/4) low-res logits clamped
        for re-use as mask prompts. The logits stay at the low resolution (h' = S/4, upscaled
        later by `_upscale`, after filtering) when the predictor offers
        `predict_low_res_torch`; a predictor with only the official `predict_torch` returns
        them at crop size.
        """
        low_res_fn = getattr(self.predictor, "predict_low_res_torch", None)
        if low_res_fn is None:
            self._low_res_logits = False
            return self.predictor.predict_torch(
                points,
                labels,
                mask_input=mask_input,
                multimask_output=multimask,
                return_logits=True,
            )
        self._low_res_logits = True
        logits, ious = low_res_fn(points, labels, mask_input=mask_input, multimask_output=multimask)
        return logits, ious, logits.clamp(-LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)

    def _upscale(self, logits: Tensor) -> Tensor:
        """(N, h', w') logits from `_decode` -> (N, h, w) at the crop size."""
        if not self._low_res_logits:
            return logits
        return self.predictor.upscale_logits(logits[:, None])[:, 0]

    def _refine_with_m2m(self, points: Tensor, low_res: Tensor) -> tuple[Tensor, Tensor]:
        """Re-prompt each point with its own mask as a dense prompt.

        points: (N, 2) crop pixels; low_res: (N, S/4, S/4) logits clamped to +-32.
        Returns (N, h', w') logits (see `_decode`) and (N,) IoU predictions of the
        single-mask output.
        """
        labels = torch.ones(len(points), 1, dtype=torch.int32, device=points.device)
        all_logits, all_ious = [], []
        # Same chunking as the first pass: the decoder runs points_per_batch prompts at once.
        for i in range(0, len(points), self.points_per_batch):
            chunk = slice(i, i + self.points_per_batch)
            logits, ious, _ = self._decode(
                points[chunk, None, :], labels[chunk], low_res[chunk, None], False
            )
            all_logits.append(logits[:, 0])
            all_ious.append(ious[:, 0])
        return torch.cat(all_logits), torch.cat(all_ious)
