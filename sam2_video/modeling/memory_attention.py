"""Memory attention: conditions the current frame's features on the memory bank.

Every tensor here is **batch-first**, one batch row per tracked object (the official module takes
and returns sequence-first tensors; transpose at the call site if needed).

Memory layout (per batch row, M tokens of `kv_in_dim` = mem_dim channels)::

    [ frame slot 0 (HW tokens) | ... | frame slot F-1 (HW tokens) | P object-pointer tokens ]
      spatial memory, RoPE'd with the query grid repeated per slot   no RoPE

* Spatial memory comes first, as whole frames of HW tokens in the query grid's row-major order
  (`features.flatten(2).transpose(1, 2)`); token j of the spatial block gets the RoPE angle of
  grid cell `j % HW`. The order of the frame slots does not matter (attention is permutation
  invariant over keys; each slot's temporal encoding is already in `memory_pos`).
* The last `num_obj_ptr_tokens` = P tokens are object pointers (each pointer split into
  hidden_dim / mem_dim tokens), which have no grid position and get no RoPE.

Objects whose memory banks differ in length (different numbers of memory frames or pointers) are
batched by padding each row to the same F and P and passing `memory_key_padding_mask` (B, M),
True = padding. Pad *whole frame slots* inside the spatial block and pointer tokens inside the
pointer block, so the two blocks have the same size for every row and `num_obj_ptr_tokens` stays
one int (= P, the padded pointer count). Padded tokens may hold any finite values: they are
excluded from the softmax. Each row must keep at least one unpadded token, otherwise its softmax
is over nothing and the output is NaN. Without a mask the computation is the official one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_video.config import SAM2Config
from sam2_video.modeling.cpu_inference import cpu_inference, mlp_in_row_blocks
from sam2_video.modeling.folded_values import attend_folded_values, fold_pays
from sam2_video.modeling.rope import apply_rope, axial_rope_rotation, repeat_rotation
from sam2_video.modeling.transformer import Attention

ROTATIONS_CACHED = 4  # per attention module: the layouts of the current and recent banks


class RoPEAttention(Attention):
    """Attention whose queries and (leading) keys carry axial 2D rotary position embedding.

    Queries are the HW tokens of one feature grid. Keys are either the same grid
    (self-attention) or, with `rope_k_repeat=True`, several grids of the same size one after the
    other (cross-attention to memory frames), optionally followed by `num_k_exclude_rope` tokens
    that get no rotation (object pointers). State-dict keys: q_proj, k_proj, v_proj, out_proj.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=downsample_rate,
            kv_in_dim=kv_in_dim,
        )
        if self.head_dim % 4 != 0:
            raise ValueError(f"RoPE needs a head dim divisible by 4, got {self.head_dim}")
        self.rope_theta = rope_theta
        # Cross-attention keys span several memory frames, each rotated like the query grid.
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)  # (width, height) of the usual query grid
        # Rotations by (height, width, key repeats, unrotated keys, device): constants, and the
        # bank has the same layout frame after frame. A few entries (up to ~4 MB each at 1024).
        self._rotations: dict[tuple, tuple[Tensor, Tensor]] = {}
        # CPU inference attends narrow values (memory tokens) before `v_proj` widens them.
        self.folds_values = fold_pays(num_heads, self.kv_in_dim, self.internal_dim)

    def _grid_size(self, num_tokens: int) -> tuple[int, int]:
        """(height, width) of the query grid: `feat_sizes` if it fits, else a square grid."""
        width, height = self.feat_sizes
        if num_tokens == width * height:
            return height, width
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(
                f"{num_tokens} query tokens are neither the {width}x{height} grid of feat_sizes "
                "nor a square grid"
            )
        return side, side

    def _rotation(
        self, num_q: int, repeats: int, num_unrotated: int, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Rotations (HW, D/2, 2) of the queries and (repeats * HW + num_unrotated, D/2, 2) of
        the keys (see `rope.repeat_rotation`); cached without autograd, outside compiled
        graphs (tensors made under inference mode must not be saved for backward)."""
        height, width = self._grid_size(num_q)
        key = (height, width, repeats, num_unrotated, device)
        use_cache = not (torch.is_grad_enabled() or torch.compiler.is_compiling())
        cached = self._rotations.get(key) if use_cache else None
        if cached is None:
            rotation = axial_rope_rotation(self.head_dim, height, width, self.rope_theta, device)
            cached = (rotation, repeat_rotation(rotation, repeats, num_unrotated))
            if use_cache:
                if len(self._rotations) >= ROTATIONS_CACHED:
                    self._rotations.pop(next(iter(self._rotations)))
                self._rotations[key] = cached
        return cached

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        num_k_exclude_rope: int = 0,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend queries to keys/values.

        Args:
            q: (B, HW, embedding_dim) queries, one token per grid cell in row-major order.
            k, v: (B, Nk, kv_in_dim); the first Nk - num_k_exclude_rope keys are HW-token grids.
            num_k_exclude_rope: number of trailing keys that get no RoPE.
            key_padding_mask: optional (B, Nk) bool, True = key is padding and is ignored.

        Returns:
            (B, HW, embedding_dim).
        """
        q = self.split_heads(self.q_proj(q))  # (B, h, HW, d)
        k = self.split_heads(self.k_proj(k))  # (B, h, Nk, d)
        num_q, num_k = q.shape[-2], k.shape[-2]
        num_k_rope = num_k - num_k_exclude_rope
        if not 0 <= num_k_rope <= num_k:
            raise ValueError(f"num_k_exclude_rope={num_k_exclude_rope} is outside [0, {num_k}]")
        if num_k_rope != num_q and not (self.rope_k_repeat and num_k_rope % num_q == 0):
            raise ValueError(
                f"{num_k_rope} rotated keys do not match {num_q} queries "
                f"(rope_k_repeat={self.rope_k_repeat} allows whole multiples only)"
            )

        q_rotation, k_rotation = self._rotation(
            num_q, num_k_rope // num_q, num_k_exclude_rope, q.device
        )
        q = apply_rope(q, q_rotation)
        # One multiply over all keys; the excluded tail is multiplied by 1 (no slicing and
        # re-concatenating the largest tensor of the frame).
        k = apply_rope(k, k_rotation)

        if key_padding_mask is not None and key_padding_mask.shape != (k.shape[0], num_k):
            raise ValueError(
                f"key_padding_mask has shape {tuple(key_padding_mask.shape)}, "
                f"expected {(k.shape[0], num_k)}"
            )
        if self.folds_values and cpu_inference(q):
            out = attend_folded_values(q, k, v, self.v_proj, key_padding_mask)  # (B, h, HW, d)
            return self.out_proj(self.merge_heads(out))  # (B, HW, embedding_dim)
        v = self.split_heads(self.v_proj(v))  # (B, h, Nk, d)
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk), True = attend
        if q.shape[0] != k.shape[0]:  # queries shared by every batch row (see MemoryAttention)
            q = q.expand(k.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, HW, d)
        return self.out_proj(self.merge_heads(out))  # (B, HW, embedding_dim)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: RoPE self-attention, RoPE cross-attention to memory, ReLU MLP.

    Fixed as in every official config: no position encoding is added to the self-attention
    queries/keys or to the cross-attention queries (RoPE carries the grid position); the memory
    position encoding is added to the cross-attention keys (not the values). Dropout (0.1 in
    training) is omitted: this module is inference-only and dropout has no weights.
    """

    def __init__(
        self,
        *,
        d_model: int,
        dim_feedforward: int,
        num_heads: int,
        kv_in_dim: int,
        rope_theta: float = 10000.0,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(
            embedding_dim=d_model, num_heads=num_heads, rope_theta=rope_theta, feat_sizes=feat_sizes
        )
        self.cross_attn_image = RoPEAttention(
            embedding_dim=d_model,
            num_heads=num_heads,
            kv_in_dim=kv_in_dim,
            rope_theta=rope_theta,
            rope_k_repeat=True,
            feat_sizes=feat_sizes,
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.activation = nn.ReLU()
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        num_obj_ptr_tokens: int = 0,
        memory_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """x: (B, HW, d_model) or (1, HW, d_model) shared by all B rows; memory, memory_pos:
        (B, M, kv_in_dim) -> (B, HW, d_model)."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)  # (B, HW, C)
        h = self.norm2(x)
        x = x + self.cross_attn_image(
            h,
            memory + memory_pos,
            memory,
            num_k_exclude_rope=num_obj_ptr_tokens,
            key_padding_mask=memory_key_padding_mask,
        )  # (B, HW, C)
        h = self.norm3(x)
        if cpu_inference(h):
            return x + mlp_in_row_blocks(h, self.linear1, torch.relu_, self.linear2)
        return x + self.linear2(self.activation(self.linear1(h)))  # (B, HW, C)


class MemoryAttention(nn.Module):
    """Stack of `MemoryAttentionLayer`s plus a final LayerNorm (see the module docstring)."""

    def __init__(
        self,
        *,
        d_model: int,
        num_layers: int,
        dim_feedforward: int,
        num_heads: int,
        kv_in_dim: int,
        rope_theta: float = 10000.0,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(
                d_model=d_model,
                dim_feedforward=dim_feedforward,
                num_heads=num_heads,
                kv_in_dim=kv_in_dim,
                rope_theta=rope_theta,
                feat_sizes=feat_sizes,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr: Tensor,
        memory: Tensor,
        curr_pos: Tensor,
        memory_pos: Tensor,
        num_obj_ptr_tokens: int = 0,
        memory_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Condition the current frame on the memory bank.

        Args:
            curr: (B, HW, d_model) current-frame features (stride-16 grid, row-major tokens), or
                (1, HW, d_model) when every row tracks an object on the same frame: the first
                layer's self-attention and cross-attention queries, which see only the frame,
                then run once instead of once per object.
            memory: (B, M, kv_in_dim) memory tokens, laid out as in the module docstring.
            curr_pos: sine position encoding of the current grid, with the batch of `curr`.
            memory_pos: (B, M, kv_in_dim) spatial + temporal encoding of the memory tokens.
            num_obj_ptr_tokens: number of trailing object-pointer tokens (no RoPE); with padding,
                the padded pointer-block size shared by all rows.
            memory_key_padding_mask: optional (B, M) bool, True = padding token (ignored).

        Returns:
            (B, HW, d_model) memory-conditioned features (after the final LayerNorm).
        """
        if curr.shape[0] not in (1, memory.shape[0]):
            raise ValueError(
                f"curr has batch {curr.shape[0]} but memory has batch {memory.shape[0]} "
                "(curr may also have batch 1, shared by all rows)"
            )
        # The position encoding enters the stack once, weakly, at the input.
        x = curr + 0.1 * curr_pos  # (B or 1, HW, C); the first cross-attention makes it (B, ...)
        for layer in self.layers:
            x = layer(
                x,
                memory,
                memory_pos,
                num_obj_ptr_tokens=num_obj_ptr_tokens,
                memory_key_padding_mask=memory_key_padding_mask,
            )
        return self.norm(x.expand(memory.shape[0], -1, -1))  # (B, HW, C)


def build_memory_attention(cfg: SAM2Config) -> MemoryAttention:
    """Memory attention of the given model config (official weights load into it strictly)."""
    mcfg = cfg.memory_attention
    if mcfg.kv_in_dim != cfg.mem_dim:
        raise ValueError(
            f"{cfg.name}: memory attention kv_in_dim={mcfg.kv_in_dim} must equal the memory "
            f"encoder out_dim={cfg.mem_dim}"
        )
    return MemoryAttention(
        d_model=mcfg.d_model,
        num_layers=mcfg.num_layers,
        dim_feedforward=mcfg.dim_feedforward,
        num_heads=mcfg.num_heads,
        kv_in_dim=mcfg.kv_in_dim,
        rope_theta=mcfg.rope_theta,
        feat_sizes=mcfg.feat_sizes,
    )
