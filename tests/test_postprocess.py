"""Mask post-processing: small-hole filling (8-connectivity) and non-overlapping masks."""

from __future__ import annotations

import pytest
import torch

from sam2_video.modeling.resize import resize_bilinear
from sam2_video.utils.postprocess import (
    HOLE_FILL_LOGIT,
    SUPPRESSED_LOGIT,
    fill_holes,
    non_overlapping,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]


def _logits_with_holes() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A (1, 1, 32, 40) foreground logit map (values 3..5) with background holes of known size.

    Returns the logits and a bool map per hole.
    """
    logits = 3.0 + 2.0 * torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    holes = {
        name: torch.zeros(32, 40, dtype=torch.bool) for name in ("one", "eight", "nine", "diag")
    }
    holes["one"][3, 3] = True
    holes["eight"][5:7, 10:14] = True  # 2 x 4 = 8 pixels
    holes["nine"][12:15, 3:6] = True  # 3 x 3 = 9 pixels
    # Two 2 x 2 squares touching only at a corner: one 8-connected hole of 8 pixels...
    holes["diag"][20:22, 20:22] = True
    holes["diag"][22:24, 22:24] = True
    # ...and two 5-pixel blobs touching at a corner: 10 pixels together, 5 each alone.
    holes["diag10"] = torch.zeros(32, 40, dtype=torch.bool)
    holes["diag10"][25:27, 30:32] = True
    holes["diag10"][27, 30] = True  # 5 pixels, its corner (26, 31)...
    holes["diag10"][27:29, 32:34] = True  # ...touches (27, 32) of these 5 pixels
    holes["diag10"][29, 33] = True
    for i, hole in enumerate(holes.values()):
        logits[0, 0][hole] = -1.0 - i  # background of various negative strengths
    return logits, holes


@pytest.mark.parametrize("device", DEVICES)
def test_fill_holes_fills_small_holes_and_keeps_large_ones(device):
    logits, holes = _logits_with_holes()
    logits = logits.to(device)
    out = fill_holes(logits, max_area=8)

    assert out.shape == logits.shape and out.dtype == logits.dtype
    assert out.device == logits.device
    out, logits = out.cpu()[0, 0], logits.cpu()[0, 0]
    for name in ("one", "eight", "diag"):
        hole = holes[name]
        assert torch.all(out[hole] == HOLE_FILL_LOGIT), name
    # 9 pixels > 8: kept. The diagonal pair is one 10-pixel hole with 8-connectivity (each
    # half alone would be filled under 4-connectivity).
    for name in ("nine", "diag10"):
        hole = holes[name]
        assert torch.equal(out[hole], logits[hole]), name
        assert bool((out[hole] <= 0).all()), name
    # Foreground is untouched.
    foreground = logits > 0
    assert torch.equal(out[foreground], logits[foreground])


@pytest.mark.parametrize("device", DEVICES)
def test_fill_holes_threshold_and_batch(device):
    logits, holes = _logits_with_holes()
    batch = torch.cat([logits, logits.clone()]).to(device)  # (2, 1, 32, 40)
    batch[1, 0, 12:15, 3:6] = 4.0  # object 2 has no 9-pixel hole
    out = fill_holes(batch, max_area=10).cpu()
    # With max_area 10 the 9- and 10-pixel holes go too: no background left but the border.
    assert bool((out[0, 0][holes["nine"]] == HOLE_FILL_LOGIT).all())
    assert bool((out[0, 0][holes["diag10"]] == HOLE_FILL_LOGIT).all())
    assert bool((out > 0).all())
    assert torch.equal(out[1, 0, 12:15, 3:6], torch.full((3, 3), 4.0))
    # max_area <= 0 is a no-op returning the input itself.
    assert fill_holes(batch, max_area=0) is batch


def test_fill_holes_keeps_large_background_and_fills_small_border_regions():
    logits = torch.full((1, 1, 16, 16), -5.0)
    logits[0, 0, 4:12, 4:12] = 5.0  # object in the middle, large background around it
    logits[0, 0, 6, 6] = -2.0  # 1-pixel hole inside the object
    out = fill_holes(logits, max_area=4)[0, 0]
    assert out[6, 6] == HOLE_FILL_LOGIT
    background = torch.ones(16, 16, dtype=torch.bool)
    background[4:12, 4:12] = False
    assert bool((out[background] == -5.0).all())

    # A small background region cut off at the image border counts as a hole as well.
    logits = torch.full((1, 1, 16, 16), 5.0)
    logits[0, 0, 0, 0:3] = -1.0
    assert bool(
        (fill_holes(logits, max_area=3) == torch.where(logits > 0, 5.0, HOLE_FILL_LOGIT)).all()
    )


@pytest.mark.parametrize("device", DEVICES)
def test_non_overlapping_keeps_each_pixel_in_its_strongest_object(device):
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(3, 20, 24, generator=gen) * 8).to(device)  # (N, H, W)
    out = non_overlapping(logits)
    assert out.shape == logits.shape and out.device == logits.device

    out, logits = out.cpu(), logits.cpu()
    winner = logits.argmax(dim=0)  # (H, W)
    assert int((out > 0).sum(dim=0).max()) <= 1  # no pixel in two objects
    for i in range(3):
        mine = winner == i
        assert torch.equal(out[i][mine], logits[i][mine])  # the winner is untouched
        expected = torch.clamp(logits[i][~mine], max=SUPPRESSED_LOGIT)
        assert torch.equal(out[i][~mine], expected)
    # Pixels positive in some object stay positive in exactly the strongest one.
    assert torch.equal((out > 0).any(dim=0), (logits > 0).any(dim=0))


def test_non_overlapping_shapes_and_single_object():
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    out = non_overlapping(logits)
    assert out.shape == (2, 1, 8, 8)
    assert int((out > 0).sum(dim=0).max()) <= 1
    single = torch.randn(1, 8, 8)
    assert non_overlapping(single) is single
    # Ties go to the first object.
    tie = torch.ones(2, 4, 4)
    out = non_overlapping(tie)
    assert bool((out[0] == 1).all()) and bool((out[1] == SUPPRESSED_LOGIT).all())


@pytest.mark.parametrize(
    "src,dst", [((64, 64), (480, 640)), ((64, 64), (1200, 1800)), ((64, 64), (37, 53))]
)
def test_resize_of_a_subset_equals_subset_of_resize(src, dst):
    """The AMG upscales only the masks that pass the IoU filter: that must give bit for bit
    the values of upscaling every candidate and selecting afterwards."""
    x = 10 * torch.randn(12, 1, *src, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([1, 4, 5, 11])
    assert torch.equal(resize_bilinear(x[keep], dst), resize_bilinear(x, dst)[keep])
