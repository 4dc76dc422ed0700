"""Image predictor: fidelity against the official outputs, and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_video.predictors.image import ImageNotSetError, SAM2ImagePredictor
from sam2_video.utils.transforms import preprocess


@pytest.fixture(scope="module")
def predictor(micro_model, image_reference):
    arrays, _ = image_reference
    pred = SAM2ImagePredictor(micro_model)
    pred.set_image(arrays["image_uint8"])
    return pred


def test_preprocess_matches_official_input(image_reference):
    arrays, _ = image_reference
    ours = preprocess(arrays["image_uint8"], 256, "cpu")
    np.testing.assert_allclose(ours.numpy(), arrays["input_tensor"], atol=1e-5)


def test_image_features_match(predictor, image_reference):
    arrays, _ = image_reference
    feats = predictor._features
    np.testing.assert_allclose(feats.image_embed.numpy(), arrays["image_embed"], atol=1e-4)
    for level in (0, 1):
        np.testing.assert_allclose(
            feats.high_res_features[level].numpy(), arrays[f"high_res_feat_{level}"], atol=1e-4
        )
    dense_pe = predictor.model.sam_prompt_encoder.get_dense_pe()
    np.testing.assert_allclose(dense_pe.detach().numpy(), arrays["dense_pe"], atol=1e-5)


def _case_inputs(arrays, case):
    name = case["name"]
    kwargs = {
        "multimask_output": case["multimask_output"],
        "return_logits": case["return_logits"],
    }
    for key in ("point_coords", "point_labels", "box", "mask_input"):
        if f"{name}__in_{key}" in arrays.files:
            kwargs[key] = arrays[f"{name}__in_{key}"]
    return kwargs


def test_every_reference_case(predictor, image_reference):
    arrays, meta = image_reference
    for case in meta["cases"]:
        name = case["name"]
        masks, ious, low_res = predictor.predict(**_case_inputs(arrays, case))
        np.testing.assert_allclose(
            ious, arrays[f"{name}__iou_predictions"], atol=1e-3, err_msg=name
        )
        np.testing.assert_allclose(
            low_res, arrays[f"{name}__low_res_logits"], atol=1e-3, err_msg=name
        )
        bits = np.packbits(masks > 0, axis=-1)
        expected_bits = arrays[f"{name}__masks_packbits"]
        differing = np.unpackbits(bits ^ expected_bits, axis=-1).sum()
        assert differing <= 4, f"{name}: {differing} mask pixels differ"
        if f"{name}__masks" in arrays.files:
            np.testing.assert_allclose(masks, arrays[f"{name}__masks"], atol=1e-3, err_msg=name)
        if not case["return_logits"]:
            assert masks.dtype == bool


def test_predict_requires_image(micro_model):
    pred = SAM2ImagePredictor(micro_model)
    with pytest.raises(ImageNotSetError):
        pred.predict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((10, 10), np.uint8), "HxWx3"),
        (np.zeros((10, 10, 4), np.uint8), "HxWx3"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_set_image_rejects_bad_images(micro_model, image, message):
    pred = SAM2ImagePredictor(micro_model)
    with pytest.raises(ValueError, match=message):
        pred.set_image(image)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"point_coords": np.array([[10.0, 10.0]])}, "together"),
        ({"point_coords": np.array([[10.0, 10.0]]), "point_labels": np.array([1, 0])}, "shape"),
        ({"point_coords": np.array([[400.0, 10.0]]), "point_labels": np.array([1])}, "outside"),
        ({"point_coords": np.array([[-1.0, 10.0]]), "point_labels": np.array([1])}, "outside"),
        ({"point_coords": np.array([[1.0, 1.0]]), "point_labels": np.array([5])}, "labels"),
        ({"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)}, "N >= 1"),
        ({"box": np.array([10.0, 10.0, 5.0, 20.0])}, "x0 <= x1"),
        ({"box": np.array([1.0, 2.0, 3.0])}, "4 numbers"),
        ({"box": np.array([0.0, 0.0, 10.0, 500.0])}, "outside"),
        ({"mask_input": np.zeros((1, 32, 32), np.float32)}, "mask_input"),
    ],
)
def test_predict_rejects_bad_prompts(predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_prediction_survives_a_bad_prompt(predictor, image_reference):
    arrays, _ = image_reference
    with pytest.raises(ValueError):
        predictor.predict(point_coords=np.array([[9999.0, 0.0]]), point_labels=np.array([1]))
    _, ious, _ = predictor.predict(
        point_coords=arrays["point_pos_multimask__in_point_coords"],
        point_labels=arrays["point_pos_multimask__in_point_labels"],
    )
    np.testing.assert_allclose(ious, arrays["point_pos_multimask__iou_predictions"], atol=1e-3)


def test_normalize_coords_false_uses_model_frame(predictor, image_reference):
    arrays, _ = image_reference
    h, w = arrays["image_uint8"].shape[:2]
    pixel = arrays["point_pos_multimask__in_point_coords"]
    model_frame = pixel * np.array([256 / w, 256 / h], dtype=np.float32)
    a = predictor.predict(point_coords=pixel, point_labels=np.array([1]))
    b = predictor.predict(
        point_coords=model_frame, point_labels=np.array([1]), normalize_coords=False
    )
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_reset_and_embedding(predictor, micro_model, image_reference):
    arrays, _ = image_reference
    pred = SAM2ImagePredictor(micro_model)
    pred.set_image(arrays["image_uint8"])
    assert pred.get_image_embedding().shape == (1, 64, 16, 16)
    assert pred.original_size == (240, 360)
    pred.reset_predictor()
    assert not pred.is_image_set
    with pytest.raises(ImageNotSetError):
        pred.get_image_embedding()
    torch.testing.assert_close(
        predictor.get_image_embedding(), torch.from_numpy(arrays["image_embed"]), atol=1e-4, rtol=0
    )
