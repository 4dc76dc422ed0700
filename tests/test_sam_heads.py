"""SAM prompt encoder + mask decoder: checkpoint layout and golden outputs of the micro model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2_video.config import available_configs, load_config
from sam2_video.modeling.mask_decoder import MaskDecoder, build_sam_heads, mask_stability_score
from sam2_video.modeling.prompt_encoder import PromptEncoder
from sam2_video.modeling.transformer import Attention

REFERENCE = Path(__file__).parent / "fixtures" / "reference"
MICRO = REFERENCE / "micro"
PREFIXES = ("sam_prompt_encoder.", "sam_mask_decoder.")
OFFICIAL_CONFIGS = [name for name in available_configs() if name != "sam2.1_micro"]


def _heads_state_shapes(prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> dict:
    shapes = {}
    for prefix, module in zip(PREFIXES, (prompt_encoder, mask_decoder)):
        for key, tensor in module.state_dict().items():
            shapes[prefix + key] = list(tensor.shape)
    return shapes


def test_official_configs_are_all_present():
    manifests = sorted(p.stem for p in (REFERENCE / "state_dict").glob("*.json"))
    manifests = [m for m in manifests if not m.endswith(".config") and m != "index"]
    assert manifests == OFFICIAL_CONFIGS
    assert len(OFFICIAL_CONFIGS) == 8


@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
def test_state_dict_matches_official_manifest(name):
    manifest = json.loads((REFERENCE / "state_dict" / f"{name}.json").read_text())["state_dict"]
    expected = {k: v["shape"] for k, v in manifest.items() if k.startswith(PREFIXES)}
    with torch.device("meta"):
        prompt_encoder, mask_decoder = build_sam_heads(load_config(name))
    ours = _heads_state_shapes(prompt_encoder, mask_decoder)
    assert sorted(set(ours) - set(expected)) == []  # unexpected keys
    assert sorted(set(expected) - set(ours)) == []  # missing keys
    assert {k: ours[k] for k in expected} == expected


@pytest.fixture(scope="module")
def micro_heads() -> tuple[PromptEncoder, MaskDecoder]:
    state = torch.load(MICRO / "sam2.1_micro.pt", map_location="cpu", weights_only=True)["model"]
    prompt_encoder, mask_decoder = build_sam_heads(load_config("sam2.1_micro"))
    for prefix, module in zip(PREFIXES, (prompt_encoder, mask_decoder)):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(sub, strict=True)
        module.eval()
    return prompt_encoder, mask_decoder


@pytest.fixture(scope="module")
def image_ref() -> dict:
    with np.load(MICRO / "image.npz") as data:
        arrays = {k: data[k] for k in data.files}
    cases = json.loads((MICRO / "image.json").read_text())["cases"]
    return {"arrays": arrays, "cases": {c["name"]: c for c in cases}}


IMAGE_CASES = [
    "point_pos_multimask",
    "points_pos_neg_single",
    "box_single",
    "box_point_single",
    "box_point_multimask",
    "mask_input_point_single",
    "mask_input_only_single",
    "batched_points_multimask",
    "point_pos_multimask_binary",
]


def test_image_case_list_is_covered(image_ref):
    assert sorted(image_ref["cases"]) == sorted(IMAGE_CASES)


def _predictor_prompts(arrays: dict, case: str, image_hw: tuple[int, int], size: int):
    """Image-predictor prompt preparation: original-image pixels -> model-input pixels,
    box corners (labels 2, 3) before the clicks."""
    scale = torch.tensor([size / image_hw[1], size / image_hw[0]])  # (x, y)
    coords = labels = None
    if f"{case}__in_point_coords" in arrays:
        coords = torch.from_numpy(arrays[f"{case}__in_point_coords"]) * scale
        labels = torch.from_numpy(arrays[f"{case}__in_point_labels"]).int()
        if coords.ndim == 2:
            coords, labels = coords[None], labels[None]  # (1, N, 2), (1, N)
    if f"{case}__in_box" in arrays:
        box = torch.from_numpy(arrays[f"{case}__in_box"]).reshape(-1, 2, 2) * scale  # (B, 2, 2)
        box_labels = torch.tensor([[2, 3]], dtype=torch.int32).expand(box.shape[0], -1)
        if coords is None:
            coords, labels = box, box_labels
        else:
            coords = torch.cat([box, coords], dim=1)
            labels = torch.cat([box_labels, labels], dim=1)
    mask = None
    if f"{case}__in_mask_input" in arrays:
        mask = torch.from_numpy(arrays[f"{case}__in_mask_input"])[None]  # (1, 1, 4h, 4w)
    return (None if coords is None else (coords, labels)), mask


def _image_inputs(arrays: dict) -> dict:
    """Decoder image inputs as the image predictor passes them: the stride-16 embedding
    (+ no_mem_embed) and the high-res maps already projected by conv_s0 / conv_s1."""
    return {
        "image_embeddings": torch.from_numpy(arrays["image_embed"]),
        "high_res_features": [
            torch.from_numpy(arrays["high_res_feat_0"]),
            torch.from_numpy(arrays["high_res_feat_1"]),
        ],
    }


@pytest.mark.parametrize("case", IMAGE_CASES)
@torch.no_grad()
def test_image_case_matches_reference(micro_heads, image_ref, case):
    prompt_encoder, mask_decoder = micro_heads
    arrays, spec = image_ref["arrays"], image_ref["cases"][case]
    image_hw = arrays["image_uint8"].shape[:2]
    size = prompt_encoder.input_image_size[0]
    points, mask = _predictor_prompts(arrays, case, image_hw, size)

    sparse, dense = prompt_encoder(points=points, boxes=None, masks=mask)
    batched = points is not None and points[0].shape[0] > 1
    low_res, iou, tokens, object_scores = mask_decoder(
        image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=spec["multimask_output"],
        repeat_image=batched,
        **_image_inputs(arrays),
    )

    n_masks = 3 if spec["multimask_output"] else 1
    batch = sparse.shape[0]
    assert low_res.shape == (batch, n_masks, 4 * 16, 4 * 16)
    assert tokens.shape == (batch, n_masks, 64)
    assert object_scores.shape == (batch, 1)
    # The predictor returns low-res logits clamped to [-32, 32]; batch 1 is squeezed.
    expected_logits = arrays[f"{case}__low_res_logits"].reshape(low_res.shape)
    expected_iou = arrays[f"{case}__iou_predictions"].reshape(iou.shape)
    np.testing.assert_allclose(low_res.clamp(-32, 32).numpy(), expected_logits, atol=1e-3, rtol=0)
    np.testing.assert_allclose(iou.numpy(), expected_iou, atol=1e-3, rtol=0)


@torch.no_grad()
def test_dynamic_fallback_decisions_match_reference(micro_heads, image_ref):
    """Token-0 stability and all-token IoUs logged by the official run, for single-mask cases."""
    prompt_encoder, mask_decoder = micro_heads
    arrays = image_ref["arrays"]
    image_hw, size = arrays["image_uint8"].shape[:2], prompt_encoder.input_image_size[0]
    checked = 0
    for name, spec in image_ref["cases"].items():
        for entry in spec["dynamic_multimask_via_stability_log"]:
            points, mask = _predictor_prompts(arrays, name, image_hw, size)
            sparse, dense = prompt_encoder(points=points, boxes=None, masks=mask)
            masks, ious, _, _ = mask_decoder.predict_masks(
                image_pe=prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=False,
                **_image_inputs(arrays),
            )
            delta = mask_decoder.dynamic_multimask_stability_delta
            stability = mask_stability_score(masks[:, 0], delta)
            np.testing.assert_allclose(stability.numpy(), entry["stability_token0"], atol=1e-4)
            np.testing.assert_allclose(ious.numpy(), entry["ious_all_tokens"], atol=1e-3)
            checked += 1
    assert checked == 5


@torch.no_grad()
def test_box_argument_equals_corner_points(micro_heads):
    prompt_encoder, _ = micro_heads
    boxes = torch.tensor([[10.0, 20.0, 200.0, 150.0], [0.0, 0.0, 256.0, 256.0]])
    sparse_box, dense_box = prompt_encoder(points=None, boxes=boxes, masks=None)
    corners = boxes.reshape(2, 2, 2)
    labels = torch.tensor([[2, 3], [2, 3]])
    sparse_pts, _ = prompt_encoder(points=(corners, labels), boxes=None, masks=None)
    assert sparse_box.shape == (2, 2, 64)
    assert sparse_pts.shape == (2, 3, 64)  # padding point appended when boxes is None
    torch.testing.assert_close(sparse_box, sparse_pts[:, :2])
    pad_embed = prompt_encoder.not_a_point_embed.weight.expand(2, -1)
    torch.testing.assert_close(sparse_pts[:, 2], pad_embed)
    assert dense_box.shape == (2, 64, 16, 16)


@torch.no_grad()
def test_single_mask_mode_without_fallback_returns_token0(micro_heads, image_ref):
    prompt_encoder, mask_decoder = micro_heads
    arrays = image_ref["arrays"]
    image_hw, size = arrays["image_uint8"].shape[:2], prompt_encoder.input_image_size[0]
    points, _ = _predictor_prompts(arrays, "box_single", image_hw, size)
    sparse, dense = prompt_encoder(points=points, boxes=None, masks=None)
    kwargs = dict(
        image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        repeat_image=False,
        **_image_inputs(arrays),
    )
    all_masks, all_iou, all_tokens, _ = mask_decoder.predict_masks(**kwargs)
    mask_decoder.dynamic_multimask_via_stability = False
    try:
        masks, iou, tokens, _ = mask_decoder(multimask_output=False, **kwargs)
    finally:
        mask_decoder.dynamic_multimask_via_stability = True
    torch.testing.assert_close(masks, all_masks[:, :1])
    torch.testing.assert_close(iou, all_iou[:, :1])
    torch.testing.assert_close(tokens, all_tokens[:, :1])
    # The reference fell back to token 3 for this prompt, so the two modes really differ.
    fallback_masks, _, _, _ = mask_decoder(multimask_output=False, **kwargs)
    torch.testing.assert_close(fallback_masks, all_masks[:, 3:4])


def test_mask_stability_score():
    logits = torch.tensor([[[1.0, 0.01, -0.01, -1.0]], [[-1.0, -1.0, -1.0, -1.0]]])  # (2, 1, 4)
    torch.testing.assert_close(mask_stability_score(logits, 0.05), torch.tensor([1 / 3, 1.0]))


def test_attention_stages_compose_to_forward():
    torch.manual_seed(0)
    attn = Attention(embedding_dim=32, num_heads=4, downsample_rate=2, kv_in_dim=8).eval()
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 8)
    qh, kh, vh = attn.project(q, kv, kv)
    assert qh.shape == (2, 4, 5, 4) and kh.shape == (2, 4, 7, 4)
    out = attn(q, kv, kv)
    torch.testing.assert_close(out, attn.attend(qh, kh, vh))
    # Against a plain softmax-attention computation.
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / 2.0, dim=-1)  # head_dim 4 -> sqrt 2
    torch.testing.assert_close(out, attn.out_proj(attn.merge_heads(weights @ vh)))
    with pytest.raises(ValueError):
        Attention(embedding_dim=32, num_heads=3)


def test_decoder_rejects_bad_inputs(micro_heads):
    prompt_encoder, mask_decoder = micro_heads
    sparse, dense = prompt_encoder(points=None, boxes=None, masks=None)
    kwargs = dict(
        image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
        repeat_image=False,
    )
    high_res = [torch.zeros(1, 8, 64, 64), torch.zeros(1, 16, 32, 32)]
    with pytest.raises(ValueError, match="repeat_image"):
        mask_decoder(
            image_embeddings=torch.zeros(2, 64, 16, 16), high_res_features=high_res, **kwargs
        )
    with pytest.raises(ValueError, match="high_res_features"):
        mask_decoder(image_embeddings=torch.zeros(1, 64, 16, 16), high_res_features=None, **kwargs)
    with pytest.raises(ValueError, match="mask prompt"):
        prompt_encoder(points=None, boxes=None, masks=torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize("num_keys,num_queries", [(8, 256), (16, 64), (17, 64), (8, 8)])
def test_few_keys_attention_path_equals_sdpa(num_keys, num_queries):
    """CPU attention over <= FEW_KEYS keys takes its own path; it must give SDPA's values."""
    torch.manual_seed(0)
    attn = Attention(embedding_dim=32, num_heads=8, downsample_rate=2).eval()
    q = torch.randn(3, num_queries, 32)
    k = torch.randn(3, num_keys, 32)
    v = torch.randn(3, num_keys, 32)
    with torch.no_grad():
        heads = attn.project(q, k, v)
        expected = attn.out_proj(attn.merge_heads(F.scaled_dot_product_attention(*heads)))
        torch.testing.assert_close(attn(q, k, v), expected, atol=1e-6, rtol=1e-5)
