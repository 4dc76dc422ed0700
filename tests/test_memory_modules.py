"""Memory attention, memory encoder and axial RoPE.

* Architecture: for every official config, the modules built on the meta device have exactly the
  `memory_attention.*` / `memory_encoder.*` keys, shapes and kinds of the official manifest; the
  micro checkpoint loads into them strictly.
* RoPE: the real cos/sin rotation equals a direct complex-number formula; `RoPEAttention` applies
  it to queries, repeats it over memory frames and leaves object-pointer keys alone.
* Padding: objects with memory banks of different lengths, padded and masked in one batch, give
  the same output as each object alone.
* Golden (micro model, video scenario 1, frame features from our image encoder): memory features
  of frames 0/1 match the official bf16 memory, and the memory attention output of frames
  1/7/23 (memory rebuilt from the official state, README "Things the official video code does
  implicitly") matches `memattn_out`, unpadded and as one padded batch.
"""

from __future__ import annotations

import cmath
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2_video.config import available_configs, load_config
from sam2_video.modeling.image_encoder import build_image_encoder
from sam2_video.modeling.memory_attention import (
    MemoryAttention,
    RoPEAttention,
    build_memory_attention,
)
from sam2_video.modeling.memory_encoder import MemoryEncoder, build_memory_encoder
from sam2_video.modeling.rope import apply_rope, axial_rope_rotation, rotate_pairs_real

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
MICRO = REFERENCE / "micro"
OFFICIAL_CONFIGS = [name for name in available_configs() if name != "sam2.1_micro"]
BUILDERS = {"memory_attention.": build_memory_attention, "memory_encoder.": build_memory_encoder}

IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32)
MEMATTN_ATOL = 1e-4  # README: features atol 1e-4 (observed ~2e-6)


# --------------------------------------------------------------------------- architecture


def test_all_official_configs_are_covered() -> None:
    manifests = {p.stem for p in (REFERENCE / "state_dict").glob("*.json")}
    manifests -= {"index"} | {m for m in manifests if m.endswith(".config")}
    assert sorted(OFFICIAL_CONFIGS) == sorted(manifests)
    assert len(OFFICIAL_CONFIGS) == 8


@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
@pytest.mark.parametrize("prefix", sorted(BUILDERS))
def test_keys_and_shapes_match_official_manifest(name: str, prefix: str) -> None:
    manifest = json.loads((REFERENCE / "state_dict" / f"{name}.json").read_text())["state_dict"]
    expected = {
        key[len(prefix) :]: (tuple(e["shape"]), e["kind"])
        for key, e in manifest.items()
        if key.startswith(prefix)
    }
    with torch.device("meta"):
        module = BUILDERS[prefix](load_config(name))
    params = {k for k, _ in module.named_parameters()}
    actual = {
        key: (tuple(t.shape), "parameter" if key in params else "buffer")
        for key, t in module.state_dict().items()
    }
    assert sorted(set(expected) - set(actual)) == []  # missing here
    assert sorted(set(actual) - set(expected)) == []  # unexpected here
    assert actual == expected


@pytest.fixture(scope="module")
def micro_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(MICRO / "sam2.1_micro.pt", map_location="cpu", weights_only=True)["model"]


def _sub_state_dict(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def micro_modules(micro_state_dict):
    cfg = load_config("sam2.1_micro")
    modules = {}
    for prefix, build in [("image_encoder.", build_image_encoder), *BUILDERS.items()]:
        module = build(cfg).eval()
        module.load_state_dict(_sub_state_dict(micro_state_dict, prefix), strict=True)
        modules[prefix.rstrip(".")] = module
    return modules


def test_micro_weights_load_strictly(micro_modules) -> None:
    assert isinstance(micro_modules["memory_attention"], MemoryAttention)
    assert isinstance(micro_modules["memory_encoder"], MemoryEncoder)
    assert len(micro_modules["memory_attention"].layers) == 2


def test_builders_reject_inconsistent_configs() -> None:
    cfg = load_config("sam2.1_micro")
    bad_attention = dataclasses.replace(
        cfg, memory_attention=dataclasses.replace(cfg.memory_attention, kv_in_dim=32)
    )
    with pytest.raises(ValueError, match="kv_in_dim"):
        build_memory_attention(bad_attention)
    bad_encoder = dataclasses.replace(
        cfg, memory_encoder=dataclasses.replace(cfg.memory_encoder, pos_num_feats=8)
    )
    with pytest.raises(ValueError, match="pos_num_feats"):
        build_memory_encoder(bad_encoder)


# --------------------------------------------------------------------------- RoPE


def _rope_by_complex_numbers(
    x: torch.Tensor, height: int, width: int, theta: float
) -> torch.Tensor:
    """Direct formula: pair i of token n times exp(j * pos * theta**(-4k/D)), k = i mod D/4,
    pos = column of n for the first D/4 pairs and its row for the others."""
    num_tokens, dim = x.shape
    out = torch.empty(num_tokens, dim, dtype=torch.float64)
    for n in range(num_tokens):
        row, col = divmod(n, width)
        for i in range(dim // 2):
            k = i % (dim // 4)
            pos = col if i < dim // 4 else row
            z = complex(x[n, 2 * i], x[n, 2 * i + 1]) * cmath.exp(
                1j * pos * theta ** (-4 * k / dim)
            )
            out[n, 2 * i], out[n, 2 * i + 1] = z.real, z.imag
    return out


@pytest.mark.parametrize("height,width,dim", [(3, 5, 16), (4, 4, 8)])
def test_rope_matches_complex_formula(height: int, width: int, dim: int) -> None:
    x = torch.randn(height * width, dim, generator=torch.Generator().manual_seed(0))
    rotation = axial_rope_rotation(dim, height, width, theta=100.0)
    assert rotation.shape == (height * width, dim // 2, 2)
    expected = _rope_by_complex_numbers(x.double(), height, width, theta=100.0)
    torch.testing.assert_close(apply_rope(x, rotation).double(), expected, atol=1e-5, rtol=0)
    # The form used under torch.compile gives the same rotation.
    torch.testing.assert_close(rotate_pairs_real(x, rotation).double(), expected, atol=1e-5, rtol=0)


def test_rope_attention_rotates_memory_frames_but_not_pointer_tokens() -> None:
    torch.manual_seed(0)
    dim, heads, kv_dim, side, frames, pointers = 16, 2, 8, 3, 2, 3
    attn = RoPEAttention(
        embedding_dim=dim, num_heads=heads, kv_in_dim=kv_dim, rope_k_repeat=True, feat_sizes=(3, 3)
    ).eval()
    q = torch.randn(2, side * side, dim)
    k = torch.randn(2, frames * side * side + pointers, kv_dim)
    v = torch.randn_like(k)
    with torch.no_grad():
        out = attn(q, k, v, num_k_exclude_rope=pointers)

        # Same computation spelled out head by head with the complex-number RoPE.
        qp = attn.q_proj(q).unflatten(-1, (heads, -1))  # (B, HW, h, d)
        kp = attn.k_proj(k).unflatten(-1, (heads, -1))
        vp = attn.v_proj(v).unflatten(-1, (heads, -1))
        head_outputs = []
        for b in range(2):
            per_head = []
            for h in range(heads):
                qr = _rope_by_complex_numbers(qp[b, :, h], side, side, 10000.0)
                spatial = [
                    _rope_by_complex_numbers(kp[b, f * 9 : (f + 1) * 9, h], side, side, 10000.0)
                    for f in range(frames)
                ]
                kr = torch.cat([*spatial, kp[b, frames * 9 :, h].double()])
                weights = torch.softmax(qr @ kr.T / math.sqrt(dim // heads), dim=-1)
                per_head.append(weights @ vp[b, :, h].double())
            head_outputs.append(torch.cat(per_head, dim=-1))
        expected = attn.out_proj(torch.stack(head_outputs).float())
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_rope_attention_grid_and_key_count_checks() -> None:
    attn = RoPEAttention(embedding_dim=8, num_heads=1, feat_sizes=(4, 2))
    assert attn._grid_size(8) == (2, 4)  # feat_sizes is (width, height)
    assert attn._grid_size(9) == (3, 3)  # other sizes: square grid
    with pytest.raises(ValueError, match="square"):
        attn._grid_size(12)
    x = torch.randn(1, 9, 8)
    with pytest.raises(ValueError, match="rope_k_repeat"):
        attn(x, torch.randn(1, 18, 8), torch.randn(1, 18, 8))
    with pytest.raises(ValueError, match="num_k_exclude_rope"):
        attn(x, x, x, num_k_exclude_rope=10)


# --------------------------------------------------------------------------- padding


def _pad_bank(
    frames: list[torch.Tensor], pointers: torch.Tensor, num_slots: int, num_ptr: int, gap: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay out one object's memory in `num_slots` frame slots + `num_ptr` pointer tokens.

    frames: list of (HW, D); pointers: (P, D). The valid frames are placed starting at slot
    `gap` (padding slots before and after), pointers first in their block. Padding is garbage.
    Returns (M, D) tokens and (M,) bool padding mask.
    """
    hw, d = frames[0].shape
    tokens = torch.randn(num_slots * hw + num_ptr, d) * 100  # finite garbage
    padding = torch.ones(num_slots * hw + num_ptr, dtype=torch.bool)
    for i, frame in enumerate(frames):
        start = (gap + i) * hw
        tokens[start : start + hw] = frame
        padding[start : start + hw] = False
    start = num_slots * hw
    tokens[start : start + len(pointers)] = pointers
    padding[start : start + len(pointers)] = False
    return tokens, padding


def test_padded_batch_equals_each_object_alone() -> None:
    torch.manual_seed(0)
    side, d_model, mem_dim = 4, 32, 8
    hw = side * side
    attention = MemoryAttention(
        d_model=d_model,
        num_layers=2,
        dim_feedforward=64,
        num_heads=2,
        kv_in_dim=mem_dim,
        feat_sizes=(side, side),
    ).eval()
    # (memory frames, pointer tokens, first slot) per object; 3 frame slots, 12 pointer tokens.
    layouts = [(1, 4, 0), (3, 12, 0), (2, 0, 1), (1, 8, 2)]
    num_slots, num_ptr = 3, 12
    curr = torch.randn(len(layouts), hw, d_model)
    curr_pos = torch.randn(len(layouts), hw, d_model)

    memories, memory_pos, masks, expected = [], [], [], []
    for b, (num_frames, num_pointers, gap) in enumerate(layouts):
        frames = [torch.randn(hw, mem_dim) for _ in range(num_frames)]
        frames_pos = [torch.randn(hw, mem_dim) for _ in range(num_frames)]
        pointers, pointers_pos = (
            torch.randn(num_pointers, mem_dim),
            torch.randn(num_pointers, mem_dim),
        )
        with torch.no_grad():
            alone = attention(
                curr[b : b + 1],
                torch.cat([*frames, pointers])[None],
                curr_pos[b : b + 1],
                torch.cat([*frames_pos, pointers_pos])[None],
                num_obj_ptr_tokens=num_pointers,
            )
        expected.append(alone[0])
        tokens, padding = _pad_bank(frames, pointers, num_slots, num_ptr, gap)
        pos, pos_padding = _pad_bank(frames_pos, pointers_pos, num_slots, num_ptr, gap)
        assert torch.equal(padding, pos_padding)
        memories.append(tokens)
        memory_pos.append(pos)
        masks.append(padding)

    with torch.no_grad():
        batched = attention(
            curr,
            torch.stack(memories),
            curr_pos,
            torch.stack(memory_pos),
            num_obj_ptr_tokens=num_ptr,
            memory_key_padding_mask=torch.stack(masks),
        )
    torch.testing.assert_close(batched, torch.stack(expected), atol=1e-5, rtol=0)

    # All objects on one frame: the frame may be passed once (batch 1) for every row.
    with torch.no_grad():
        shared = attention(
            curr[:1],
            torch.stack(memories),
            curr_pos[:1],
            torch.stack(memory_pos),
            num_obj_ptr_tokens=num_ptr,
            memory_key_padding_mask=torch.stack(masks),
        )
        per_row = attention(
            curr[:1].expand(len(layouts), -1, -1),
            torch.stack(memories),
            curr_pos[:1].expand(len(layouts), -1, -1),
            torch.stack(memory_pos),
            num_obj_ptr_tokens=num_ptr,
            memory_key_padding_mask=torch.stack(masks),
        )
    assert shared.shape == (len(layouts), hw, d_model)
    torch.testing.assert_close(shared, per_row, atol=1e-6, rtol=0)


def test_padding_mask_shape_is_checked() -> None:
    attention = MemoryAttention(
        d_model=16, num_layers=1, dim_feedforward=16, num_heads=1, kv_in_dim=8, feat_sizes=(2, 2)
    )
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention(
            torch.randn(1, 4, 16),
            torch.randn(1, 8, 8),
            torch.randn(1, 4, 16),
            torch.randn(1, 8, 8),
            memory_key_padding_mask=torch.zeros(1, 7, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="batch"):
        attention(
            torch.randn(2, 4, 16), torch.randn(1, 8, 8), torch.randn(2, 4, 16), torch.randn(1, 8, 8)
        )


# --------------------------------------------------------------------------- golden (micro)

GOLDEN_FRAMES = (0, 1, 7, 23)


@pytest.fixture(scope="module")
def scenario1() -> dict[str, np.ndarray]:
    with np.load(MICRO / "video_scenario1_single_click.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def frame_features(micro_modules) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Stride-16 features and sine encoding (each (1, 64, 16, 16)) of the golden frames."""
    with np.load(MICRO / "video_frames.npz") as data:
        frames = data["frames_resized_uint8"][list(GOLDEN_FRAMES)]
    # The video loader's preprocessing (README "Input conventions").
    images = ((frames / 255.0).astype(np.float32) - IMAGE_MEAN) / IMAGE_STD  # (N, S, S, 3)
    with torch.no_grad():
        out = micro_modules["image_encoder"](torch.from_numpy(images).permute(0, 3, 1, 2))
    return {
        f: (out.vision_features[i : i + 1], out.vision_pos_enc[-1][i : i + 1])
        for i, f in enumerate(GOLDEN_FRAMES)
    }


def _bf16_bits_to_float(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(bits.astype(np.int16)).view(torch.bfloat16).float()


@pytest.mark.parametrize("frame,binarize", [(0, True), (1, False)])
def test_memory_encoder_matches_official_memory(
    micro_modules, scenario1, frame_features, frame: int, binarize: bool
) -> None:
    # Prompted frame 0: binarized mask; propagated frame 1: sigmoid. Then x*20 - 10.
    low_res = torch.from_numpy(scenario1["state_low_res_logits"][frame])[None]  # (1, 1, 64, 64)
    high_res = F.interpolate(low_res, size=(256, 256), mode="bilinear", align_corners=False)
    mask = (high_res > 0).float() if binarize else torch.sigmoid(high_res)
    with torch.no_grad():
        features, pos = micro_modules["memory_encoder"](
            frame_features[frame][0], mask * 20.0 - 10.0, skip_mask_sigmoid=True
        )
    assert features.shape == pos.shape == (1, 16, 16, 16)
    expected = _bf16_bits_to_float(scenario1["state_maskmem_features_bf16_bits"][frame])
    # The reference is stored in bf16: allow one bf16 ulp, and few values rounded the other way.
    err = (features - expected).abs()
    assert bool((err <= 2.0**-7 * expected.abs() + 1e-6).all()), float(err.max())
    assert int((features.to(torch.bfloat16).float() != expected).sum()) <= 0.005 * expected.numel()
    with torch.no_grad():
        sine = micro_modules["memory_encoder"].position_encoding(features)
    torch.testing.assert_close(pos, sine, atol=0, rtol=0)


def _sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1D transformer sine encoding [sin | cos] used for pointer distances, (N,) -> (N, dim)."""
    half = dim // 2
    freqs = temperature ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
    angles = positions[:, None] / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _official_memory_bank(frame: int, scenario1, micro_modules, micro_state_dict):
    """Memory of scenario 1 at a propagated `frame` (object 0), official order and layout.

    Returns tokens (M, 16), pos (M, 16), number of pointer tokens, number of memory frames.
    """
    num_maskmem, max_ptrs, hidden, mem_dim = 7, 16, 64, 16
    memory = _bf16_bits_to_float(
        scenario1["state_maskmem_features_bf16_bits"][:, 0]
    )  # (T, 16, 16, 16)
    tpos = micro_state_dict["maskmem_tpos_enc"].reshape(num_maskmem, mem_dim)
    with torch.no_grad():
        sine = micro_modules["memory_encoder"].position_encoding(memory[:1])[0]  # (16, 16, 16)
    sine = sine.flatten(1).T  # (HW, 16)

    # Conditioning frame 0 (temporal slot 6), then frames t-6 .. t-1 (slots 5 .. 0).
    slots = [(0, num_maskmem - 1)] + [
        (frame - r, r - 1) for r in range(num_maskmem - 1, 0, -1) if frame - r >= 1
    ]
    tokens = [memory[f].flatten(1).T for f, _ in slots]
    pos = [sine + tpos[s] for _, s in slots]

    # Pointers: conditioning frame 0 (distance t), then frames t-1 .. t-15; 4 tokens each.
    pointer_frames = [(0, frame)] + [(frame - d, d) for d in range(1, max_ptrs) if frame - d >= 1]
    pointers = torch.stack(
        [torch.from_numpy(scenario1["state_obj_ptr"][f, 0]) for f, _ in pointer_frames]
    )
    distances = torch.tensor([float(d) for _, d in pointer_frames]) / (max_ptrs - 1)
    pointer_pos = F.linear(
        _sine_1d(distances, hidden),
        micro_state_dict["obj_ptr_tpos_proj.weight"],
        micro_state_dict["obj_ptr_tpos_proj.bias"],
    )  # (P, 16)
    split = hidden // mem_dim
    tokens.append(pointers.reshape(-1, mem_dim))
    pos.append(pointer_pos.repeat_interleave(split, dim=0))
    return torch.cat(tokens), torch.cat(pos), split * len(pointer_frames), len(slots)


@pytest.fixture(scope="module")
def golden_attention_inputs(scenario1, micro_modules, micro_state_dict, frame_features):
    frame_obj = scenario1["memattn_out_frame_obj"]
    inputs = {}
    for frame in GOLDEN_FRAMES[1:]:
        (row,) = np.flatnonzero((frame_obj[:, 0] == frame) & (frame_obj[:, 1] == 0))
        feats, feats_pos = frame_features[frame]
        bank = _official_memory_bank(frame, scenario1, micro_modules, micro_state_dict)
        curr = feats.flatten(2).transpose(1, 2)  # (1, HW, 64)
        curr_pos = feats_pos.flatten(2).transpose(1, 2)  # (1, HW, 64)
        expected = torch.from_numpy(scenario1["memattn_out"][row])  # (HW, 64)
        inputs[frame] = (curr, curr_pos, bank, expected)
    return inputs


@pytest.mark.parametrize("frame", GOLDEN_FRAMES[1:])
def test_memory_attention_matches_official(micro_modules, golden_attention_inputs, frame) -> None:
    curr, curr_pos, (memory, memory_pos, num_ptr, _), expected = golden_attention_inputs[frame]
    with torch.no_grad():
        out = micro_modules["memory_attention"](
            curr, memory[None], curr_pos, memory_pos[None], num_obj_ptr_tokens=num_ptr
        )
    torch.testing.assert_close(out[0], expected, atol=MEMATTN_ATOL, rtol=0)


def test_memory_attention_padded_batch_matches_official(
    micro_modules, golden_attention_inputs
) -> None:
    """Frames 1, 7, 23 (1/7/7 memory frames, 4/28/64 pointer tokens) as one padded batch."""
    torch.manual_seed(0)
    hw = 256
    items = [golden_attention_inputs[f] for f in GOLDEN_FRAMES[1:]]
    num_slots = max(item[2][3] for item in items)
    num_ptr = max(item[2][2] for item in items)
    memories, memory_pos, masks = [], [], []
    for _, _, (memory, pos, _n_ptr, n_frames), _ in items:
        frames = list(memory[: n_frames * hw].split(hw))
        frames_pos = list(pos[: n_frames * hw].split(hw))
        tokens, padding = _pad_bank(frames, memory[n_frames * hw :], num_slots, num_ptr, gap=0)
        pos_tokens, _ = _pad_bank(frames_pos, pos[n_frames * hw :], num_slots, num_ptr, gap=0)
        memories.append(tokens)
        memory_pos.append(pos_tokens)
        masks.append(padding)
    with torch.no_grad():
        out = micro_modules["memory_attention"](
            torch.cat([item[0] for item in items]),
            torch.stack(memories),
            torch.cat([item[1] for item in items]),
            torch.stack(memory_pos),
            num_obj_ptr_tokens=num_ptr,
            memory_key_padding_mask=torch.stack(masks),
        )
    torch.testing.assert_close(
        out, torch.stack([item[3] for item in items]), atol=MEMATTN_ATOL, rtol=0
    )
