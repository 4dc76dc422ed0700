"""Automatic mask generator: golden tests against the official SAM 2 outputs (micro model),
parameter validation, and the min_mask_region_area cleanup on synthetic masks."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from coco_rle import decode_rle

from sam2_video.build import build_sam2
from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from sam2_video.predictors.image import SAM2ImagePredictor
from sam2_video.utils.mask_utils import rle_to_mask

# pycocotools' decode trips a numpy 2 deprecation warning inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

MICRO = Path(__file__).parent / "fixtures" / "reference" / "micro"
CASES = sorted(json.loads((MICRO / "amg_index.json").read_text())["sets"])

# README: AMG outputs are identical across thread counts; allow a few pixels per mask.
MAX_PIXEL_DIFF = 4
SCORE_ATOL = 1e-3
KEYS = {
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "point_coords",
    "stability_score",
    "crop_box",
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_sam2("sam2.1_micro", checkpoint=MICRO / "sam2.1_micro.pt", device="cpu")


def _load_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(MICRO / name)), cv2.COLOR_BGR2RGB)


def _decode(segmentation: Any) -> np.ndarray:
    if isinstance(segmentation, np.ndarray):
        return segmentation
    if isinstance(segmentation["counts"], str):
        return decode_rle(segmentation)
    return rle_to_mask(segmentation)


def _assert_segmentation_type(segmentation: Any, output_mode: str, hw: tuple[int, int]) -> None:
    if output_mode == "binary_mask":
        assert isinstance(segmentation, np.ndarray)
        assert segmentation.dtype == bool and segmentation.shape == hw
    else:
        assert segmentation["size"] == list(hw)
        counts_type = str if output_mode == "coco_rle" else list
        assert isinstance(segmentation["counts"], counts_type)


def _assert_same_annotations(ours: list[dict], ref: list[dict], output_mode: str) -> None:
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert set(a) == KEYS
        hw = tuple(b["segmentation"]["size"])
        _assert_segmentation_type(a["segmentation"], output_mode, hw)
        ours_mask, ref_mask = _decode(a["segmentation"]), _decode(b["segmentation"])
        n_diff = int((ours_mask != ref_mask).sum())
        assert n_diff <= MAX_PIXEL_DIFF, f"mask {i}: {n_diff} pixels differ"
        assert a["area"] == int(ours_mask.sum())
        assert abs(a["area"] - b["area"]) <= n_diff
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1 if n_diff else 0)
        assert a["point_coords"] == b["point_coords"]
        assert a["crop_box"] == b["crop_box"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=SCORE_ATOL)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=SCORE_ATOL)


# --------------------------------------------------------------------------- golden tests


@pytest.mark.parametrize("case", CASES)
def test_generate_matches_official(model: torch.nn.Module, case: str) -> None:
    ref = json.loads((MICRO / f"{case}.json").read_text())
    kwargs = ref["constructor_kwargs"]
    generator = SAM2AutomaticMaskGenerator(model, **kwargs)
    assert isinstance(generator.predictor, SAM2ImagePredictor)
    annotations = generator.generate(_load_rgb(ref["image"]))
    assert len(annotations) == ref["num_masks"]
    output_mode = kwargs.get("output_mode", "binary_mask")
    expected = ref["annotations"]
    if kwargs.get("min_mask_region_area", 0) > 0:
        # The official CPU run skipped the cleanup; the reference recorded its effect
        # separately: cleaned masks and boxes, with the other fields unchanged.
        post = ref["postprocess_small_regions"]
        assert post["num_masks_after"] == len(expected)
        expected = [
            {
                **ann,
                "segmentation": rle,
                "area": int(sum(rle["counts"][1::2])),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": iou,
            }
            for ann, rle, (x0, y0, x1, y1), iou in zip(
                expected, post["rles_uncompressed"], post["boxes_xyxy"], post["iou_preds"]
            )
        ]
    _assert_same_annotations(annotations, expected, output_mode)


def test_min_region_case_without_cleanup_matches_raw_output(model: torch.nn.Module) -> None:
    ref = json.loads((MICRO / "amg_min_region.json").read_text())
    kwargs = {**ref["constructor_kwargs"], "min_mask_region_area": 0}
    annotations = SAM2AutomaticMaskGenerator(model, **kwargs).generate(_load_rgb(ref["image"]))
    _assert_same_annotations(annotations, ref["annotations"], kwargs["output_mode"])
    # The cleanup really changed this mask (so the golden test above is not vacuous).
    cleaned = ref["postprocess_small_regions"]["rles_uncompressed"][0]
    assert (_decode(annotations[0]["segmentation"]) != rle_to_mask(cleaned)).any()


def test_defaults_match_official() -> None:
    defaults = {
        name: p.default
        for name, p in inspect.signature(SAM2AutomaticMaskGenerator).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults == {
        "points_per_side": 32,
        "points_per_batch": 64,
        "pred_iou_thresh": 0.8,
        "stability_score_thresh": 0.95,
        "stability_score_offset": 1.0,
        "mask_threshold": 0.0,
        "box_nms_thresh": 0.7,
        "crop_n_layers": 0,
        "crop_nms_thresh": 0.7,
        "crop_overlap_ratio": 512 / 1500,
        "crop_n_points_downscale_factor": 1,
        "point_grids": None,
        "min_mask_region_area": 0,
        "output_mode": "binary_mask",
        "use_m2m": False,
        "multimask_output": True,
    }


# --------------------------------------------------------------------------- synthetic predictor


class ScriptedPredictor:
    """Stands in for `SAM2ImagePredictor`: returns fixed single-mask logits per prompt.

    ``masks_for(x, y)`` maps a prompt point (crop pixels) to ((H, W) bool mask, iou).
    """

    def __init__(self, masks_for: Any, low_res: int = 16) -> None:
        self.masks_for = masks_for
        self.low_res = low_res
        self.original_size: tuple[int, int] | None = None
        self.device = torch.device("cpu")

    def set_image(self, image: np.ndarray) -> None:
        self.original_size = image.shape[:2]

    def reset_predictor(self) -> None:
        self.original_size = None

    def predict_torch(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, ious = [], []
        for x, y in point_coords[:, 0].tolist():
            mask, iou = self.masks_for(x, y)
            logits.append(torch.where(torch.from_numpy(mask), 20.0, -20.0))
            ious.append(iou)
        masks = torch.stack(logits)[:, None]  # (B, 1, H, W)
        n = len(ious)
        low_res = torch.zeros(n, 1, self.low_res, self.low_res)
        return masks, torch.tensor(ious)[:, None], low_res


def _square_with_defects() -> tuple[np.ndarray, np.ndarray]:
    """(mask with a 4 px hole and a 4 px island, the same mask cleaned) on 60x80."""
    clean = np.zeros((60, 80), dtype=bool)
    clean[20:40, 25:55] = True
    dirty = clean.copy()
    dirty[28:30, 38:40] = False  # hole
    dirty[5:7, 5:7] = True  # island, far from the square
    return dirty, clean


def _generator(predictor: ScriptedPredictor, **kwargs: Any) -> SAM2AutomaticMaskGenerator:
    return SAM2AutomaticMaskGenerator(
        predictor, points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.9, **kwargs
    )


def test_min_mask_region_area_fills_holes_and_removes_islands() -> None:
    dirty, clean = _square_with_defects()
    predictor = ScriptedPredictor(lambda x, y: (dirty, 0.9))
    image = np.zeros((60, 80, 3), dtype=np.uint8)

    raw = _generator(predictor).generate(image)
    assert len(raw) == 1  # every point gives the same mask: NMS keeps one
    np.testing.assert_array_equal(raw[0]["segmentation"], dirty)
    assert raw[0]["bbox"] == [5.0, 5.0, 49.0, 34.0]

    cleaned = _generator(predictor, min_mask_region_area=10).generate(image)
    assert len(cleaned) == 1
    np.testing.assert_array_equal(cleaned[0]["segmentation"], clean)
    assert cleaned[0]["area"] == int(clean.sum()) == 600
    assert cleaned[0]["bbox"] == [25.0, 20.0, 29.0, 19.0]

    # A threshold below the defects' size leaves the mask alone.
    kept = _generator(predictor, min_mask_region_area=4).generate(image)
    np.testing.assert_array_equal(kept[0]["segmentation"], dirty)


def test_min_mask_region_area_prefers_untouched_duplicate() -> None:
    dirty, clean = _square_with_defects()
    # Left-half points give the defective mask with the higher predicted IoU.
    predictor = ScriptedPredictor(lambda x, y: (dirty, 0.95) if x < 40 else (clean, 0.6))
    image = np.zeros((60, 80, 3), dtype=np.uint8)

    raw = _generator(predictor, box_nms_thresh=0.9).generate(image)
    assert [a["predicted_iou"] for a in raw] == pytest.approx([0.95, 0.6])

    cleaned = _generator(predictor, box_nms_thresh=0.9, min_mask_region_area=10).generate(image)
    # Both become the same square; the one that needed no cleanup wins the NMS.
    assert len(cleaned) == 1
    assert cleaned[0]["predicted_iou"] == pytest.approx(0.6)
    assert cleaned[0]["point_coords"][0][0] >= 40
    np.testing.assert_array_equal(cleaned[0]["segmentation"], clean)


def test_no_confident_mask_gives_empty_list() -> None:
    dirty, _ = _square_with_defects()
    predictor = ScriptedPredictor(lambda x, y: (dirty, 0.3))  # below pred_iou_thresh
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    assert _generator(predictor).generate(image) == []
    assert _generator(predictor, min_mask_region_area=10).generate(image) == []


@pytest.mark.parametrize("output_mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_output_modes_encode_the_same_mask(output_mode: str) -> None:
    dirty, _ = _square_with_defects()
    predictor = ScriptedPredictor(lambda x, y: (dirty, 0.9))
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    (ann,) = _generator(predictor, output_mode=output_mode).generate(image)
    _assert_segmentation_type(ann["segmentation"], output_mode, (60, 80))
    np.testing.assert_array_equal(_decode(ann["segmentation"]), dirty)
    assert ann["area"] == int(dirty.sum())
    assert ann["crop_box"] == [0.0, 0.0, 80.0, 60.0]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"points_per_side": None}, "exactly one of points_per_side and point_grids"),
        ({"point_grids": [np.full((4, 2), 0.5)]}, "exactly one of"),
        ({"points_per_side": 0}, "points_per_side"),
        ({"points_per_batch": 0}, "points_per_batch"),
        ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
        ({"stability_score_thresh": -0.1}, "stability_score_thresh"),
        ({"box_nms_thresh": 2.0}, "box_nms_thresh"),
        ({"crop_nms_thresh": -1.0}, "crop_nms_thresh"),
        ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio"),
        ({"crop_n_layers": -1}, "crop_n_layers"),
        ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor"),
        ({"min_mask_region_area": -5}, "min_mask_region_area"),
        ({"output_mode": "png"}, "output_mode"),
        (
            {"points_per_side": 2, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2},
            "no points",
        ),
        (
            {"points_per_side": None, "point_grids": [np.full((4, 2), 0.5)], "crop_n_layers": 1},
            "one per crop layer",
        ),
        ({"points_per_side": None, "point_grids": [np.full((4, 2), 1.5)]}, r"\[0, 1\]"),
        ({"points_per_side": None, "point_grids": [np.zeros((4, 3))]}, "shape"),
    ],
)
def test_invalid_parameters_raise(kwargs: dict, match: str) -> None:
    predictor = ScriptedPredictor(lambda x, y: (np.zeros((8, 8), dtype=bool), 0.9))
    with pytest.raises(ValueError, match=match):
        SAM2AutomaticMaskGenerator(predictor, **kwargs)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((8, 8), dtype=np.uint8),
        np.zeros((8, 8, 4), dtype=np.uint8),
        np.zeros((8, 8, 3), dtype=np.float32),
        np.zeros((0, 8, 3), dtype=np.uint8),
        [[0, 0, 0]],
    ],
)
def test_invalid_image_raises(image: Any) -> None:
    predictor = ScriptedPredictor(lambda x, y: (np.zeros((8, 8), dtype=bool), 0.9))
    with pytest.raises(ValueError, match="image"):
        SAM2AutomaticMaskGenerator(predictor, points_per_side=2).generate(image)
