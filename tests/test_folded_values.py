"""Attention with the value projection after the softmax equals SDPA over projected values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam2_video.modeling import folded_values
from sam2_video.modeling.folded_values import attend_folded_values, fold_pays
from sam2_video.modeling.memory_attention import RoPEAttention


def _reference(q, k, memory, v_proj, heads, padding=None):
    batch, num_k, _ = memory.shape
    v = v_proj(memory).view(batch, num_k, heads, -1).transpose(1, 2)  # (B, h, Nk, d)
    mask = None if padding is None else ~padding[:, None, None, :]
    return F.scaled_dot_product_attention(q.expand(batch, -1, -1, -1), k, v, attn_mask=mask)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("shared_queries", [False, True])
def test_folded_equals_sdpa_with_padding_and_blocks(heads, shared_queries, monkeypatch) -> None:
    torch.manual_seed(0)
    batch, num_q, num_k, dim, mem_dim = 3, 40, 70, 32, 8
    monkeypatch.setattr(folded_values, "QUERY_BLOCK", 16)  # 3 query blocks, the last partial
    monkeypatch.setattr(folded_values, "KEY_BLOCK", 20)  # 4 key blocks: rows 2 pads all of one
    v_proj = torch.nn.Linear(mem_dim, dim)
    q = torch.randn(1 if shared_queries else batch, heads, num_q, dim // heads)
    k = torch.randn(batch, heads, num_k, dim // heads)
    memory = torch.randn(batch, num_k, mem_dim) * 3
    padding = torch.zeros(batch, num_k, dtype=torch.bool)
    padding[1, 50:] = True
    padding[2, :30] = True
    with torch.inference_mode():
        want = _reference(q, k, memory, v_proj, heads, padding)
        got = attend_folded_values(q, k, memory, v_proj, padding)
        assert got.shape == want.shape == (batch, heads, num_q, dim // heads)
        torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
        # The mask matters: without it the padded rows differ.
        unmasked = attend_folded_values(q, k, memory, v_proj)
        assert (unmasked[1:] - want[1:]).abs().max() > 1e-2


def test_cross_attention_folds_only_narrow_values_and_equals_the_plain_path() -> None:
    torch.manual_seed(0)
    attn = RoPEAttention(
        embedding_dim=256, num_heads=1, kv_in_dim=64, rope_k_repeat=True, feat_sizes=(4, 4)
    )
    assert attn.folds_values and fold_pays(1, 64, 256)
    assert not fold_pays(4, 64, 256) and not fold_pays(1, 16, 64)  # more work / narrow heads
    assert not RoPEAttention(embedding_dim=256, num_heads=1, feat_sizes=(4, 4)).folds_values
    q = torch.randn(2, 16, 256)
    memory, pos = torch.randn(2, 3 * 16 + 4, 64), torch.randn(2, 3 * 16 + 4, 64)
    padding = torch.zeros(2, 52, dtype=torch.bool)
    padding[0, 32:48] = True  # a padded frame slot
    with torch.inference_mode():
        folded = attn(q, memory + pos, memory, num_k_exclude_rope=4, key_padding_mask=padding)
        attn.folds_values = False
        plain = attn(q, memory + pos, memory, num_k_exclude_rope=4, key_padding_mask=padding)
    torch.testing.assert_close(folded, plain, atol=2e-6, rtol=1e-5)
