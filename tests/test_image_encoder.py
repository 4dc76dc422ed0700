"""Image encoder (Hiera + FPN neck) and position encodings.

* Architecture: for every official config, the encoder built on the meta device has exactly the
  `image_encoder.*` state-dict keys, shapes and parameter/buffer kinds of the official manifest.
* Numerics: with the micro checkpoint, trunk stages, FPN levels and sine encodings match the
  official outputs on the reference image (features atol 1e-4, README section 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2_video.config import available_configs, load_config
from sam2_video.modeling import cpu_inference, hiera, windows
from sam2_video.modeling.hiera import Hiera
from sam2_video.modeling.image_encoder import BackboneOutput, build_image_encoder, pointwise_conv
from sam2_video.modeling.position_encoding import PositionEmbeddingRandom, PositionEmbeddingSine

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
MICRO = REFERENCE / "micro"
PREFIX = "image_encoder."
FEATURE_ATOL = 1e-4

OFFICIAL_CONFIGS = [name for name in available_configs() if name != "sam2.1_micro"]


def _manifest_entries(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    manifest = json.loads((REFERENCE / "state_dict" / f"{name}.json").read_text())["state_dict"]
    return {
        key: (tuple(entry["shape"]), entry["kind"])
        for key, entry in manifest.items()
        if key.startswith(PREFIX)
    }


def test_all_official_configs_are_covered() -> None:
    assert len(OFFICIAL_CONFIGS) == 8
    for name in OFFICIAL_CONFIGS:
        assert (REFERENCE / "state_dict" / f"{name}.json").is_file(), name


@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
def test_state_dict_matches_official_manifest(name: str) -> None:
    with torch.device("meta"):
        encoder = build_image_encoder(load_config(name))
    params = {PREFIX + k for k, _ in encoder.named_parameters()}
    ours = {
        PREFIX + key: (tuple(tensor.shape), "parameter" if PREFIX + key in params else "buffer")
        for key, tensor in encoder.state_dict().items()
    }
    expected = _manifest_entries(name)
    assert sorted(set(expected) - set(ours)) == []  # missing keys
    assert sorted(set(ours) - set(expected)) == []  # unexpected keys
    mismatched = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert mismatched == {}
    assert all(t.dtype == torch.float32 for t in encoder.state_dict().values())


@pytest.fixture(scope="module")
def micro_encoder():
    checkpoint = torch.load(MICRO / "sam2.1_micro.pt", map_location="cpu", weights_only=True)
    state = checkpoint["model"]
    encoder = build_image_encoder(load_config("sam2.1_micro")).eval()
    encoder.load_state_dict(
        {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}, strict=True
    )
    return encoder, state


@pytest.fixture(scope="module")
def micro_image():
    return dict(np.load(MICRO / "image.npz"))


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float = FEATURE_ATOL) -> None:
    assert tuple(actual.shape) == expected.shape
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, torch.from_numpy(expected), atol=atol, rtol=0)


def test_micro_trunk_and_neck_match_reference(micro_encoder, micro_image) -> None:
    encoder, _ = micro_encoder
    images = torch.from_numpy(micro_image["input_tensor"])
    with torch.no_grad():
        stages = encoder.trunk(images)
        features, pos = encoder.neck(stages)
    assert len(stages) == len(features) == len(pos) == 4
    for level in range(4):
        _close(stages[level], micro_image[f"trunk_out_{level}"])
        _close(features[level], micro_image[f"neck_feat_{level}"])
        _close(pos[level], micro_image[f"neck_pos_{level}"])


def test_micro_encoder_output_drops_scalped_level(micro_encoder, micro_image) -> None:
    encoder, _ = micro_encoder
    with torch.no_grad():
        out = encoder(torch.from_numpy(micro_image["input_tensor"]))
    assert isinstance(out, BackboneOutput)
    assert len(out.backbone_fpn) == len(out.vision_pos_enc) == 3  # scalp=1 drops the 8x8 level
    for level in range(3):
        _close(out.backbone_fpn[level], micro_image[f"neck_feat_{level}"])
        _close(out.vision_pos_enc[level], micro_image[f"neck_pos_{level}"])
    assert out.vision_features is out.backbone_fpn[-1]
    assert tuple(out.vision_features.shape) == (1, 64, 16, 16)


def test_micro_encoder_is_batch_consistent(micro_encoder, micro_image) -> None:
    encoder, _ = micro_encoder
    image = torch.from_numpy(micro_image["input_tensor"])
    batch = torch.cat([image, image.flip(-1)])
    with torch.no_grad():
        out = encoder(batch)
        single = encoder(image.flip(-1))
    _close(out.backbone_fpn[0][:1], micro_image["neck_feat_0"])
    torch.testing.assert_close(out.vision_features[1:], single.vision_features, atol=1e-5, rtol=0)
    assert tuple(out.vision_pos_enc[0].shape) == (2, 64, 64, 64)


def test_hiera_rejects_image_size_not_multiple_of_32(micro_encoder) -> None:
    encoder, _ = micro_encoder
    with pytest.raises(ValueError, match="multiple"):
        encoder.trunk(torch.zeros(1, 3, 240, 240))


def test_hiera_block_layout_matches_official_derivation() -> None:
    """Per-block width, heads, window and pooling of sam2.1_hiera_t (from the official config)."""
    derived = json.loads((REFERENCE / "state_dict" / "sam2.1_hiera_t.config.json").read_text())
    expected = derived["derived"]["hiera"]
    with torch.device("meta"):
        trunk = Hiera.from_config(load_config("sam2.1_hiera_t").hiera)
    assert trunk.stage_ends == expected["stage_ends"]
    assert trunk.channel_list == expected["channel_list"]
    for block, ref in zip(trunk.blocks, expected["blocks"], strict=True):
        layout = (block.dim, block.dim_out, block.attn.num_heads, block.window_size)
        assert layout == (ref["dim"], ref["dim_out"], ref["num_heads"], ref["window_size"])
        assert block.q_stride == (tuple(ref["q_stride"]) if ref["q_stride"] else None)


def test_sine_encoding_returns_fresh_batched_tensor() -> None:
    pe = PositionEmbeddingSine(num_pos_feats=16)
    first = pe(torch.zeros(2, 3, 5, 7))
    assert tuple(first.shape) == (2, 16, 5, 7)
    first.zero_()  # must not corrupt the cached grid
    second = pe(torch.zeros(1, 3, 5, 7))
    assert second.abs().sum() > 0
    # Normalised: the last row/column sits at ~2*pi, so channel 0 (sin of y) is ~0 there.
    assert second[0, 0, -1].abs().max() < 1e-4
    with pytest.raises(ValueError):
        PositionEmbeddingSine(num_pos_feats=15)


def test_random_encoding_grid_matches_reference_dense_pe(micro_encoder, micro_image) -> None:
    _, state = micro_encoder
    matrix = state["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    pe = PositionEmbeddingRandom(num_pos_feats=matrix.shape[1])
    pe.load_state_dict({"positional_encoding_gaussian_matrix": matrix}, strict=True)
    _close(pe((16, 16))[None], micro_image["dense_pe"], atol=1e-5)


def test_random_encoding_of_pixel_centres_equals_grid() -> None:
    torch.manual_seed(0)
    pe = PositionEmbeddingRandom(num_pos_feats=8)
    height, width = 3, 5
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).float() + 0.5  # (1, HW, 2) (x, y)
    points = pe.forward_with_coords(centres, (height, width))  # (1, HW, 16)
    grid = pe((height, width))  # (16, H, W)
    assert tuple(points.shape) == (1, height * width, 16)
    torch.testing.assert_close(points[0], grid.flatten(1).T, atol=1e-5, rtol=0)
    # The caller's coordinates are not modified.
    assert centres[0, 0].tolist() == [0.5, 0.5]


# --------------------------------------------------------------------------- CPU fast paths
# The encoder's CPU inference kernels (`sam2_video.modeling.hiera`, `pointwise_conv`) must give
# the plain modules' results, and the plain modules must still run under autograd.


def test_max_pool_hw_matches_max_pool2d() -> None:
    torch.manual_seed(0)
    qkv = torch.randn(3, 9, 7, 3, 8)  # odd sizes: floor mode drops the last row / column
    q = qkv[:, :, :, 0]  # (B, H, W, C) strided, as the queries sliced out of qkv
    expected = F.max_pool2d(q.permute(0, 3, 1, 2), kernel_size=2, stride=2).permute(0, 2, 3, 1)
    assert torch.equal(windows.max_pool_hw(q, (2, 2)), expected)


def _mlp_with_spy(monkeypatch):
    torch.manual_seed(0)
    mlp = hiera.HieraMlp(dim=16, hidden_dim=64)
    calls = []
    blocked = hiera.mlp_in_row_blocks
    monkeypatch.setattr(hiera, "mlp_in_row_blocks", lambda *a: calls.append(1) or blocked(*a))
    return mlp, calls


def test_chunked_mlp_matches_plain(monkeypatch) -> None:
    mlp, calls = _mlp_with_spy(monkeypatch)
    monkeypatch.setattr(
        cpu_inference, "MLP_BLOCK_ROWS", 7
    )  # 3 x 5 x 4 = 60 rows: a partial last block
    x = torch.randn(3, 5, 4, 16)
    with torch.no_grad():
        expected = mlp.layers[1](F.gelu(mlp.layers[0](x)))
    with torch.inference_mode():
        out = mlp(x)
    assert calls == [1]
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_mlp_under_autograd_runs_the_plain_modules(monkeypatch) -> None:
    mlp, calls = _mlp_with_spy(monkeypatch)
    x = torch.randn(2, 4, 16, requires_grad=True)
    mlp(x).sum().backward()
    assert calls == []
    assert x.grad is not None and mlp.layers[0].weight.grad is not None


def test_chunked_window_attention_matches_one_batch(monkeypatch) -> None:
    torch.manual_seed(0)
    attn = hiera.MultiScaleAttention(dim=16, dim_out=32, num_heads=2, q_stride=(2, 2))
    windows = torch.randn(10, 4, 4, 16)  # 10 windows of 4x4 tokens
    monkeypatch.setattr(hiera, "_ATTENTION_CHUNK_TOKENS", 48)  # 3 windows a chunk
    calls = []
    attend = attn._attend
    monkeypatch.setattr(attn, "_attend", lambda x: calls.append(x.shape[0]) or attend(x))
    with torch.inference_mode():
        out = attn(windows)
        expected = attend(windows)
    assert calls == [3, 3, 3, 1]
    assert out.shape == (10, 2, 2, 32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_pointwise_conv_matches_conv2d() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 5, kernel_size=1)
    channels_last = torch.randn(2, 6, 7, 12).permute(0, 3, 1, 2)  # (B, C, H, W), C innermost
    contiguous = channels_last.contiguous()
    with torch.no_grad():
        expected = conv(contiguous)
        fast = pointwise_conv(conv, channels_last)
        plain = pointwise_conv(conv, contiguous)
    assert fast.permute(0, 2, 3, 1).is_contiguous()  # the matmul path ran
    assert plain.is_contiguous()  # NCHW input: the conv itself
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain, expected, atol=0, rtol=0)


def test_block_projects_only_real_tokens_when_windows_are_mostly_padding(monkeypatch) -> None:
    torch.manual_seed(0)
    block = hiera.MultiScaleBlock(dim=16, dim_out=32, num_heads=2, window_size=7, q_stride=(2, 2))
    x = torch.randn(2, 8, 8, 16)  # 8x8 tokens in 14x14 padded windows: 3x padding
    rows = []
    qkv = block.attn.qkv
    monkeypatch.setattr(
        qkv, "forward", lambda t: rows.append(t.shape[1:3]) or F.linear(t, qkv.weight, qkv.bias)
    )
    with torch.inference_mode():
        fast = block(x)
        monkeypatch.setattr(hiera, "mostly_padding", lambda *_: False)
        plain = block(x)
    assert rows == [(8, 8), (7, 7)]  # the real map first, then the 4 zero-padded windows
    assert fast.shape == plain.shape == (2, 4, 4, 32)
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=0)
