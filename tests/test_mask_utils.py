"""Unit tests of the automatic-mask-generator helpers (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from sam2_video.utils.mask_utils import (
    MaskRecords,
    area_from_rle,
    batched_mask_to_box,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    build_point_grid,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle,
    nms,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)

MICRO = Path(__file__).parent / "fixtures" / "reference" / "micro"


def _recorded_nms_calls() -> list[tuple[str, dict]]:
    calls = []
    for name in ("amg_default", "amg_shapes_thr10"):
        log = json.loads((MICRO / f"{name}.json").read_text())["stage_log"]
        calls += [(f"{name}[{i}]", call) for i, call in enumerate(log["nms_calls"])]
    return calls


# --------------------------------------------------------------------------- grids and crops


def test_point_grid_is_cell_centres_x_fastest() -> None:
    grid = build_point_grid(2)
    np.testing.assert_array_equal(grid, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    grid = build_point_grid(32)
    assert grid.shape == (1024, 2) and grid.dtype == np.float64
    np.testing.assert_allclose(grid[:32, 1], 1 / 64)  # first row: constant y
    np.testing.assert_allclose(np.diff(grid[:32, 0]), 1 / 32)


def test_all_layer_point_grids_downscale() -> None:
    grids = build_all_layer_point_grids(32, 2, 2)
    assert [len(g) for g in grids] == [32 * 32, 16 * 16, 8 * 8]
    assert [len(g) for g in build_all_layer_point_grids(10, 1, 3)] == [100, 9]


def test_crop_boxes_match_official_layout() -> None:
    boxes, layers = generate_crop_boxes((240, 360), 1, 512 / 1500)
    # Values from the official generator (the reference crop1 run uses the last one).
    assert boxes == [
        [0, 0, 360, 240],
        [0, 0, 221, 161],
        [0, 80, 221, 240],
        [140, 0, 360, 161],
        [140, 80, 360, 240],
    ]
    assert layers == [0, 1, 1, 1, 1]
    boxes, layers = generate_crop_boxes((1080, 1920), 2, 512 / 1500)
    assert layers == [0] + [1] * 4 + [2] * 16
    covered = np.zeros((1080, 1920), dtype=bool)
    for x0, y0, x1, y1 in boxes[5:]:
        assert 0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1080
        covered[y0:y1, x0:x1] = True
    assert covered.all()


# --------------------------------------------------------------------------- masks and boxes


def test_stability_score_counts_pixels() -> None:
    logits = torch.full((2, 4, 5), -10.0)
    logits[0, 0, :4] = 5.0  # above +1: in both masks
    logits[0, 1, :2] = 0.5  # between -1 and +1: only in the loose mask
    logits[0, 2, 0] = -0.5
    # mask 1 stays below -1 everywhere: 0 / 0
    score = calculate_stability_score(logits, mask_threshold=0.0, threshold_offset=1.0)
    assert score.dtype == torch.float32
    assert score[0].item() == pytest.approx(4 / 7)
    assert torch.isnan(score[1])
    # Around 4.0 +- 0.5 only the 5.0 pixels count, in both masks.
    assert calculate_stability_score(logits, 4.0, 0.5)[0].item() == 1.0


def test_mask_to_box_inclusive_and_empty() -> None:
    masks = torch.zeros(2, 3, 6, 8, dtype=torch.bool)
    masks[0, 0, 2, 3] = True  # single pixel
    masks[0, 1, 1:5, 0:8] = True  # touches left and right borders
    masks[1, 2] = True  # full
    boxes = batched_mask_to_box(masks)
    assert boxes.shape == (2, 3, 4) and boxes.dtype == torch.int64
    assert boxes[0, 0].tolist() == [3, 2, 3, 2]
    assert boxes[0, 1].tolist() == [0, 1, 7, 4]
    assert boxes[0, 2].tolist() == [0, 0, 0, 0]  # empty
    assert boxes[1, 2].tolist() == [0, 0, 7, 5]
    assert batched_mask_to_box(masks[0, 0]).tolist() == [3, 2, 3, 2]  # plain (H, W)
    assert batched_mask_to_box(torch.zeros(0, 6, 8, dtype=torch.bool)).shape == (0, 4)


def test_box_conversions_and_uncrop() -> None:
    box = torch.tensor([[10, 20, 30, 60]])
    assert box_xyxy_to_xywh(box).tolist() == [[10, 20, 20, 40]]
    assert box_xyxy_to_xywh(np.array([1.0, 2.0, 4.0, 8.0])).tolist() == [1.0, 2.0, 3.0, 6.0]
    assert box_area(box).tolist() == [800]
    assert uncrop_boxes_xyxy(box, [5, 7, 100, 100]).tolist() == [[15, 27, 35, 67]]
    assert uncrop_points(torch.tensor([[1.5, 2.0]]), [5, 7, 100, 100]).tolist() == [[6.5, 9.0]]
    masks = torch.ones(1, 2, 3, dtype=torch.bool)
    padded = uncrop_masks(masks, [4, 1, 7, 3], orig_h=5, orig_w=9)
    assert padded.shape == (1, 5, 9)
    assert padded.sum() == 6 and padded[0, 1:3, 4:7].all()
    assert uncrop_masks(masks, [0, 0, 3, 2], orig_h=2, orig_w=3) is masks


def test_box_near_crop_edge_ignores_image_borders() -> None:
    crop, image = [100, 0, 300, 200], [0, 0, 300, 200]
    boxes = torch.tensor(
        [
            [5, 50, 60, 80],  # left side within 20 px of the crop's inner left border
            [50, 50, 199, 80],  # right side at x=299 (image border): fine
            [50, 0, 100, 80],  # top at the image top: fine
            [25, 50, 60, 80],  # 25 px from the crop border: fine
        ]
    )
    assert is_box_near_crop_edge(boxes, crop, image).tolist() == [True, False, False, False]


# --------------------------------------------------------------------------- RLE


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trip_matches_pycocotools(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(5, 17, 23, generator=gen) > 0.6
    masks[0] = False
    masks[1] = True
    masks[2, 0, 0] = True  # foreground first pixel: counts start with a 0 run
    rles = mask_to_rle(masks)
    for mask, rle in zip(masks.numpy(), rles):
        assert rle["size"] == [17, 23]
        assert all(isinstance(c, int) for c in rle["counts"])
        assert sum(rle["counts"]) == 17 * 23
        if mask[0, 0]:
            assert rle["counts"][0] == 0
        np.testing.assert_array_equal(rle_to_mask(rle), mask)
        assert area_from_rle(rle) == int(mask.sum())
        expected = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        encoded = coco_encode_rle(rle)
        assert encoded["counts"] == expected["counts"].decode("utf-8")
        assert encoded["size"] == [17, 23]
        decoded = coco_mask.decode({"size": encoded["size"], "counts": encoded["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_rle_to_mask_rejects_wrong_total() -> None:
    with pytest.raises(ValueError, match="RLE counts"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})


# --------------------------------------------------------------------------- cleanup


def _blob_with_hole_and_island() -> np.ndarray:
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:30, 5:30] = True  # 625 px square
    mask[10:12, 10:13] = False  # 6 px hole
    mask[20:26, 20:26] = False  # 36 px hole
    mask[35:37, 40:42] = True  # 4 px island
    mask[2:10, 38:46] = True  # 64 px island
    return mask


def test_remove_small_regions_fills_small_holes_only() -> None:
    mask = _blob_with_hole_and_island()
    out, changed = remove_small_regions(mask, 10, "holes")
    assert changed
    assert out[10:12, 10:13].all()  # small hole filled
    assert not out[20:26, 20:26].any()  # big hole kept
    np.testing.assert_array_equal(out[35:, :], mask[35:, :])  # islands untouched
    same, changed = remove_small_regions(mask, 5, "holes")
    assert not changed and same is mask


def test_remove_small_regions_drops_small_islands_only() -> None:
    mask = _blob_with_hole_and_island()
    out, changed = remove_small_regions(mask, 10, "islands")
    assert changed
    assert not out[35:37, 40:42].any()
    assert out[2:10, 38:46].all() and out[5:10, 5:30].all()
    assert not out[10:12, 10:13].any()  # holes untouched
    # Every island below the threshold: the largest one survives.
    out, changed = remove_small_regions(mask, 10_000, "islands")
    assert changed and out.sum() == mask[:31, :31].sum()
    with pytest.raises(ValueError, match="mode"):
        remove_small_regions(mask, 10, "blobs")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- NMS


@pytest.mark.parametrize(
    "name,call", _recorded_nms_calls(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_nms_matches_every_recorded_call(name: str, call: dict) -> None:
    boxes = torch.tensor(call["boxes"], dtype=torch.float32)
    scores = torch.tensor(call["scores"], dtype=torch.float32)
    categories = torch.zeros(len(boxes), dtype=torch.int64)
    assert nms(boxes, scores, call["iou_threshold"]).tolist() == call["keep"]
    assert batched_nms(boxes, scores, categories, call["iou_threshold"]).tolist() == call["keep"]


def test_nms_order_ties_and_strict_threshold() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],  # same box, same score: the lower index wins
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 with box 0
            [20.0, 20.0, 30.0, 30.0],
            [5.0, 5.0, 5.0, 5.0],  # degenerate (zero area): never suppressed
        ]
    )
    scores = torch.tensor([0.5, 0.5, 0.4, 0.9, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2, 4]  # IoU == 0.5 is not > 0.5
    assert nms(boxes, scores, 0.49).tolist() == [3, 0, 4]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []
    with pytest.raises(ValueError, match="nms expects"):
        nms(boxes[:, :3], scores, 0.5)


def _greedy_reference(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Textbook per-pair greedy NMS (stable score order), for cross-checking."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i].item())
    b = boxes.tolist()
    kept: list[int] = []
    for i in order:
        ok = True
        for k in kept:
            w = max(0.0, min(b[i][2], b[k][2]) - max(b[i][0], b[k][0]))
            h = max(0.0, min(b[i][3], b[k][3]) - max(b[i][1], b[k][1]))
            inter = w * h
            area_i = (b[i][2] - b[i][0]) * (b[i][3] - b[i][1])
            area_k = (b[k][2] - b[k][0]) * (b[k][3] - b[k][1])
            union = area_i + area_k - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_greedy_reference_with_ties(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 60
    xy = torch.randint(0, 30, (n, 2), generator=gen).float()
    wh = torch.randint(1, 20, (n, 2), generator=gen).float()
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.randint(0, 4, (n,), generator=gen).float() / 4  # many ties
    # Thresholds no small-integer IoU ratio hits, so float32 vs exact IoU cannot disagree.
    thr = [0.2987, 0.5, 0.7013][seed % 3]
    assert nms(boxes, scores, thr).tolist() == _greedy_reference(boxes, scores, thr)


@pytest.mark.parametrize("n", [40, 1500])  # both torchvision strategies (<= / > 4000 coords)
def test_batched_nms_keeps_categories_apart(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    xy = torch.randint(0, 50, (n, 2), generator=gen).float()
    boxes = torch.cat([xy, xy + 30], dim=1)
    scores = torch.rand(n, generator=gen)
    categories = torch.randint(0, 3, (n,), generator=gen)
    keep = batched_nms(boxes, scores, categories, 0.5)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])  # by decreasing score
    expected: set[int] = set()
    for c in range(3):
        members = torch.where(categories == c)[0]
        expected |= set(members[nms(boxes[members], scores[members], 0.5)].tolist())
    assert set(keep.tolist()) == expected


# --------------------------------------------------------------------------- records


def test_mask_records_filter_and_cat() -> None:
    def records(n: int, offset: int) -> MaskRecords:
        return MaskRecords(
            iou_preds=torch.arange(n, dtype=torch.float32) + offset,
            points=torch.zeros(n, 2),
            stability_score=torch.ones(n),
            boxes=torch.zeros(n, 4, dtype=torch.int64),
            rles=[{"id": offset + i} for i in range(n)],
            crop_boxes=torch.zeros(n, 4, dtype=torch.int64),
        )

    merged = MaskRecords.cat([records(3, 0), records(0, 50), records(2, 10)])
    assert len(merged) == 5
    assert merged.iou_preds.tolist() == [0, 1, 2, 10, 11]
    picked = merged.filter(torch.tensor([4, 0]))
    assert picked.iou_preds.tolist() == [11, 0] and [r["id"] for r in picked.rles] == [11, 0]
    masked = merged.filter(torch.tensor([True, False, False, True, False]))
    assert masked.iou_preds.tolist() == [0, 10] and [r["id"] for r in masked.rles] == [0, 10]
    assert masked.points.shape == (2, 2)
    with pytest.raises(ValueError):
        MaskRecords.cat([])
