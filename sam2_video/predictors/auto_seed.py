"""Auto-seeding: start tracking whatever the automatic mask generator finds on a frame.

`AutoSeeder` runs `SAM2AutomaticMaskGenerator` on one frame and keeps the masks worth tracking:
large enough, best first, and not already covered by what is tracked (nor by a better mask
kept in the same pass, so an object's parts do not become objects of their own). The
streaming session turns each kept mask into a new object (`SessionOptions.auto_seed`).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam2_video.modeling.sam2 import ImageFeatures, SAM2Model
from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from sam2_video.predictors.image import SAM2ImagePredictor
from sam2_video.utils.steps import drain

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoSeedOptions:
    """What auto-seeding looks for and how often.

    Mask generator settings (see `SAM2AutomaticMaskGenerator`; the defaults are the official
    ones except `points_per_side`, 16 instead of 32, because seeding runs on a live stream):
        points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
        stability_score_offset, mask_threshold, box_nms_thresh, crop_n_layers,
        min_mask_region_area, use_m2m.
    max_objects: seeding adds objects only while the session tracks fewer than this (None: up
        to the session's own `max_objects`, which always applies too).
    reseed_every: also seed every this many frames (frame indices divisible by it), adding
        only what is not tracked yet; None seeds the first frame only.
    coverage_threshold: a new mask is "already covered", and skipped, when at least this
        fraction of its area lies inside the union of the tracked masks, in (0, 1].
    min_area: masks smaller than this many frame pixels are not tracked (empty ones never are).
    """

    points_per_side: int = 16
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    min_mask_region_area: int = 0
    use_m2m: bool = False
    max_objects: int | None = None
    reseed_every: int | None = None
    coverage_threshold: float = 0.5
    min_area: int = 0

    def __post_init__(self) -> None:
        if self.max_objects is not None and self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1 or None, got {self.max_objects}")
        if self.reseed_every is not None and self.reseed_every < 1:
            raise ValueError(f"reseed_every must be >= 1 or None, got {self.reseed_every}")
        if not 0.0 < self.coverage_threshold <= 1.0:
            raise ValueError(f"coverage_threshold must be in (0, 1], got {self.coverage_threshold}")
        if self.min_area < 0:
            raise ValueError(f"min_area must be >= 0, got {self.min_area}")

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `SAM2AutomaticMaskGenerator` (binary masks out)."""
        return {
            "points_per_side": self.points_per_side,
            "points_per_batch": self.points_per_batch,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "stability_score_offset": self.stability_score_offset,
            "mask_threshold": self.mask_threshold,
            "box_nms_thresh": self.box_nms_thresh,
            "crop_n_layers": self.crop_n_layers,
            "min_mask_region_area": self.min_mask_region_area,
            "use_m2m": self.use_m2m,
            "output_mode": "binary_mask",
        }


@dataclass(frozen=True, eq=False)
class SeedMask:
    """One mask proposed for tracking.

    mask: (H, W) bool at frame resolution. area: its pixel count.
    predicted_iou, stability_score: the generator's quality estimates.
    """

    mask: np.ndarray
    area: int
    predicted_iou: float
    stability_score: float


class AutoSeeder:
    """Finds masks worth tracking on a frame (wraps a `SAM2AutomaticMaskGenerator`).

    The generator embeds the frame itself, unless the caller hands it the frame's features
    (`features=`; the streaming session does: no second image-encoder pass per seeding).
    """

    def __init__(
        self, model: SAM2Model | SAM2ImagePredictor, options: AutoSeedOptions | None = None
    ) -> None:
        self.options = options or AutoSeedOptions()
        self.generator = SAM2AutomaticMaskGenerator(model, **self.options.generator_kwargs())

    def propose(
        self,
        image: np.ndarray,
        covered: np.ndarray | None = None,
        limit: int | None = None,
        *,
        features: ImageFeatures | None = None,
    ) -> list[SeedMask]:
        """Masks to start tracking on `image`, best first.

        image: (H, W, 3) uint8 RGB. covered: (H, W) bool union of the masks already tracked
        (None: nothing tracked). limit: keep at most this many. features: the image's backbone
        features (batch 1) to use instead of embedding it again.
        """
        return drain(self.propose_steps(image, covered, limit, features=features))

    def propose_steps(
        self,
        image: np.ndarray,
        covered: np.ndarray | None = None,
        limit: int | None = None,
        *,
        features: ImageFeatures | None = None,
    ) -> Generator[None, None, list[SeedMask]]:
        """`propose` in slices: yields after each slice of the mask generator (see
        `SAM2AutomaticMaskGenerator.generate_steps`) and returns the kept masks.

        features: as in `propose`.
        """
        if covered is not None and covered.shape != image.shape[:2]:
            raise ValueError(
                f"covered must be the frame's (H, W) = {image.shape[:2]}, got {covered.shape}"
            )
        if limit is not None and limit <= 0:
            return []
        annotations = yield from self.generator.generate_steps(image, features)
        candidates = [
            SeedMask(
                mask=np.asarray(ann["segmentation"], dtype=bool),
                area=int(ann["area"]),
                predicted_iou=float(ann["predicted_iou"]),
                stability_score=float(ann["stability_score"]),
            )
            for ann in annotations
        ]
        kept = select_uncovered(
            candidates,
            covered,
            coverage_threshold=self.options.coverage_threshold,
            min_area=self.options.min_area,
            limit=limit,
        )
        logger.debug("auto-seed: %d of %d generated masks kept", len(kept), len(candidates))
        return kept


def select_uncovered(
    candidates: list[SeedMask],
    covered: np.ndarray | None,
    *,
    coverage_threshold: float,
    min_area: int,
    limit: int | None = None,
) -> list[SeedMask]:
    """Keep candidates, best predicted IoU first, whose area is mostly not yet covered.

    covered: (H, W) bool, or None for nothing. Each kept mask joins the covered union, so a
    later (worse) candidate overlapping it is judged against it too.
    """
    ranked = sorted(
        candidates, key=lambda c: (c.predicted_iou, c.stability_score, c.area), reverse=True
    )
    union = None if covered is None else covered.astype(bool, copy=True)
    kept: list[SeedMask] = []
    for candidate in ranked:
        if limit is not None and len(kept) >= limit:
            break
        area = int(candidate.mask.sum())
        if area == 0 or area < min_area:
            continue
        if union is not None:
            overlap = int(np.count_nonzero(candidate.mask & union))
            if overlap >= coverage_threshold * area:
                continue
            union |= candidate.mask
        else:
            union = candidate.mask.copy()
        kept.append(candidate)
    return kept
