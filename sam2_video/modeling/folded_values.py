"""Attention to memory with the value projection applied after the softmax (CPU).

The memory attention's cross-attention reads values from 64-channel memory tokens that its
`v_proj` widens to 256 channels before attention. Attention weights are a convex combination
over the keys (each row sums to 1), and a linear map commutes with such a combination:

    softmax(S) @ (M @ Wv^T + bv)  ==  (softmax(S) @ M) @ Wv^T + bv

so the weighted sum can run on the 64 memory channels and the projection on the Nq outputs
instead of the Nk memory tokens. With one head that is 4x less work in the attention-times-values
product (and no Nk x 256 value tensor), the same values up to rounding. CPU SDPA kernels need
equal query and value widths, so the attention is computed here in blocks of queries and keys
with the softmax accumulated over the key blocks (see `QUERY_BLOCK`).

On other devices the fused SDPA kernels are faster than any of this; callers use it on CPU only
(see `RoPEAttention`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Scores are computed for blocks of QUERY_BLOCK queries x KEY_BLOCK keys (8 MB of float32), the
# softmax accumulated over the key blocks (running maximum and sum, as fused attention kernels
# do) so that each block's scores are still in cache when exponentiated and multiplied by the
# values. One thread of a 2-core AMD EPYC, 4096 queries of 256 channels, one object, the other
# core busy (bench/bench_memory_attention.py, two runs): 8208 keys (2 memory frames) SDPA
# 499-672 ms, 512 x 4096 blocks 343-354 ms; 28736 keys (7 frames) SDPA 1562-1668 ms, 512 x 4096
# blocks 1267-1395 ms, 256 queries x all keys in one block 1299-2046 ms (it spills the cache).
QUERY_BLOCK = 512
KEY_BLOCK = 4096
# A finite "minus infinity" for padding keys, so that a block maximum is always finite (no
# -inf - -inf = NaN): a key block that is all padding for some row gives exp(0) = 1 weights, and
# the next block with a real key rescales them to 0.
_PADDING_SCORE = -1e30


# Below this head width SDPA's fused kernel wins: for the micro model (head 64, 16-channel
# memory, 1856 keys) SDPA took 1.9 ms and the folded blocks 2.7 ms; at head 256 (every official
# model) the folded blocks take ~0.8x of SDPA's time (bench/bench_memory_attention.py).
MIN_HEAD_DIM = 128


def fold_pays(num_heads: int, kv_in_dim: int, internal_dim: int) -> bool:
    """True if attending on the raw values is less work than on projected ones (each head
    then multiplies the weights by all `kv_in_dim` memory channels instead of its own
    `internal_dim // num_heads` projected ones) and the heads are wide enough for that to
    outweigh keeping the scores in memory."""
    head_dim = internal_dim // num_heads
    return num_heads * kv_in_dim < internal_dim and head_dim >= MIN_HEAD_DIM


def attend_folded_values(
    q: Tensor,
    k: Tensor,
    values: Tensor,
    v_proj: nn.Linear,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Softmax attention whose values are projected by `v_proj` after the weighted sum.

    Args:
        q: (B or 1, h, Nq, d) projected (and rotated) queries; batch 1 is shared by all rows.
        k: (B, h, Nk, d) projected (and rotated) keys.
        values: (B, Nk, c) unprojected values, the input of `v_proj` (c = kv_in_dim).
        v_proj: Linear(c, h * d) whose output would have been split into h heads of d.
        key_padding_mask: optional (B, Nk) bool, True = padding key (excluded).

    Returns:
        (B, h, Nq, d): the same as scaled dot-product attention over `v_proj(values)`.
    """
    batch, heads, _, head_dim = k.shape
    num_q = q.shape[-2]
    q = q * head_dim**-0.5
    weight = v_proj.weight.view(heads, head_dim, -1).transpose(-1, -2)  # (h, c, d)
    bias = v_proj.bias.view(heads, 1, head_dim)  # (h, 1, d)
    out = q.new_empty(batch, heads, num_q, head_dim)
    # One (object, head) at a time: batching objects into one product would shrink the query
    # blocks below what keeps a matrix product efficient (1.2x slower for 16 objects at 1024).
    for row in range(batch):
        keys_t = k[row].transpose(-1, -2)  # (h, d, Nk)
        memory = values[row]  # (Nk, c), shared by every head
        padding = None if key_padding_mask is None else key_padding_mask[row]  # (Nk,)
        queries = q[row if q.shape[0] > 1 else 0]  # (h, Nq, d)
        for start in range(0, num_q, QUERY_BLOCK):
            rows = slice(start, start + QUERY_BLOCK)
            mixed = _softmax_times_values(queries[:, rows], keys_t, memory, padding)  # (h, n, c)
            out[row, :, rows] = torch.baddbmm(bias, mixed, weight)  # (h, n, d)
    return out


def _softmax_times_values(
    queries: Tensor, keys_t: Tensor, memory: Tensor, padding: Tensor | None
) -> Tensor:
    """softmax(queries @ keys_t) @ memory over key blocks of KEY_BLOCK.

    queries (h, n, d) already scaled, keys_t (h, d, Nk), memory (Nk, c), padding (Nk,) bool or
    None -> (h, n, c).
    """
    heads, num_rows = queries.shape[:2]
    # Before the first block: no weight yet (a -inf maximum rescales the zeros to zeros).
    maximum = queries.new_full((heads, num_rows, 1), float("-inf"))
    mixed = queries.new_zeros(heads, num_rows, memory.shape[-1])
    total = queries.new_zeros(heads, num_rows, 1)
    for start in range(0, keys_t.shape[-1], KEY_BLOCK):
        cols = slice(start, start + KEY_BLOCK)
        scores = queries @ keys_t[..., cols]  # (h, n, k)
        if padding is not None:
            scores.masked_fill_(padding[cols], _PADDING_SCORE)
        new_max = torch.maximum(maximum, scores.amax(dim=-1, keepdim=True))  # (h, n, 1)
        rescale = (maximum - new_max).exp_()  # earlier blocks' weights, relative to new_max
        weights = scores.sub_(new_max).exp_()  # (h, n, k), unnormalised
        mixed = mixed.mul_(rescale).add_(weights @ memory[cols])
        total = total.mul_(rescale).add_(weights.sum(dim=-1, keepdim=True))
        maximum = new_max
    return mixed.div_(total)
