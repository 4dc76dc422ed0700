"""Mask post-processing for tracking outputs, on any device, without a CUDA extension."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

# Holes get this small positive logit: foreground, but the least confident foreground.
HOLE_FILL_LOGIT = 0.1
# Pixels an object loses to a stronger overlapping object are pushed below this logit.
SUPPRESSED_LOGIT = -10.0


def _small_background_components(background: np.ndarray, max_area: int) -> np.ndarray:
    """background: (H, W) bool -> bool map of its 8-connected components with area <= max_area."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        background.astype(np.uint8), connectivity=8
    )
    small = np.zeros(count, dtype=bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] <= max_area  # label 0 is the non-background
    return small[labels]


def fill_holes(mask_logits: Tensor, max_area: int) -> Tensor:
    """Fill background regions of at most `max_area` pixels inside masks.

    mask_logits: (B, 1, h, w) float logits (background = logit <= 0). Connected components
    (8-connectivity) are found with OpenCV on a CPU copy: the masks are low-res (S/4), so the
    copy is small on any device. Returns a new tensor on the input's device.
    """
    if max_area <= 0:
        return mask_logits
    background = (mask_logits <= 0).cpu().numpy()
    holes = np.stack(
        [_small_background_components(background[i, 0], max_area) for i in range(len(background))]
    )[:, None]
    holes_t = torch.from_numpy(holes).to(mask_logits.device)
    return torch.where(holes_t, torch.full_like(mask_logits, HOLE_FILL_LOGIT), mask_logits)


def non_overlapping(mask_logits: Tensor) -> Tensor:
    """Keep each pixel only in the object with the highest logit there.

    mask_logits: (N, H, W) or (N, 1, H, W) logits of N objects on one frame.
    """
    if mask_logits.shape[0] <= 1:
        return mask_logits
    winner = mask_logits.argmax(dim=0, keepdim=True)  # (1, ...)
    index = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    keep = winner == index.view(-1, *([1] * (mask_logits.dim() - 1)))
    return torch.where(keep, mask_logits, mask_logits.clamp(max=SUPPRESSED_LOGIT))
