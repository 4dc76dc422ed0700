"""Attention to memory with the value projection applied after the softmax (CPU).

The memory attention's cross-attention reads values from 64-channel memory tokens that its
`v_proj` widens to 256 channels before attention. Attention weights are a convex combination
over the keys (each row sums to 1), and a linear map commutes with such a combination:

    softmax(S) @ (M @ Wv^T + bv)  ==  (softmax(S) @ M) @ Wv^T + bv

so the weighted sum can run on the 64 memory channels and the projection on the Nq outputs
instead of the Nk memory tokens. With one head that is 4x less work in the attention-times-values
product (and no Nk x 256 value tensor), the same values up to rounding. CPU SDPA kernels need
equal query and value widths, so the scores are computed here a block of queries at a time:
each block's (Nk,) score rows are still in cache when the softmax and the value product read
them.

On other devices the fused SDPA kernels are faster than any of this; callers use it on CPU only
(see `RoPEAttention`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Query rows per block: as many as fit about 32 MB of float32 scores, within 256..512 rows.
# Measured on one thread of a 2-core AMD EPYC, 4096 queries of 256 channels (one object), folded
# attention for 8200 keys (2 memory frames): 256 rows 374 ms, 512 rows 361 ms, 1024 rows 478 ms;
# for 28736 keys (7 frames): 128 rows 1458 ms, 256 rows 1204 ms, 512 rows 1340 ms.
BLOCK_SCORES = 1 << 23
BLOCK_ROWS = (256, 512)


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
    batch, heads, num_k, head_dim = k.shape
    num_q = q.shape[-2]
    q = q * head_dim**-0.5
    weight = v_proj.weight.view(heads, head_dim, -1).transpose(-1, -2)  # (h, c, d)
    bias = v_proj.bias.view(heads, 1, head_dim)  # (h, 1, d)
    block = min(BLOCK_ROWS[1], max(BLOCK_ROWS[0], BLOCK_SCORES // num_k))
    out = q.new_empty(batch, heads, num_q, head_dim)
    # One (object, head) at a time: batching objects into one product would shrink the query
    # blocks below what keeps a matrix product efficient (1.2x slower for 16 objects at 1024).
    for row in range(batch):
        keys_t = k[row].transpose(-1, -2)  # (h, d, Nk)
        memory = values[row]  # (Nk, c), shared by every head
        padding = None if key_padding_mask is None else key_padding_mask[row]  # (Nk,)
        queries = q[row if q.shape[0] > 1 else 0]  # (h, Nq, d)
        for start in range(0, num_q, block):
            rows = slice(start, start + block)
            scores = queries[:, rows] @ keys_t  # (h, n, Nk)
            if padding is not None:
                scores.masked_fill_(padding, float("-inf"))
            mixed = scores.softmax(dim=-1) @ memory  # (h, n, c)
            out[row, :, rows] = torch.baddbmm(bias, mixed, weight)  # (h, n, d)
    return out
