"""Hiera trunk: a hierarchical ViT with windowed attention and query pooling between stages.

Layout inside the trunk is channels-last, (B, H, W, C). Each stage halves the resolution
(max-pooling the attention queries and the residual of its first block) and multiplies the
width by `dim_mul` and the head count by `head_mul`. Most blocks attend within square windows
(padding the map up to a multiple of the window); `global_att_blocks` attend over the whole map.

Attribute names follow the official checkpoints (`patch_embed.proj`, `pos_embed`,
`pos_embed_window`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.layers.{0,1},proj}`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sam2_video.config import HieraConfig
from sam2_video.modeling.cpu_inference import cpu_inference, mlp_in_row_blocks
from sam2_video.modeling.windows import (
    max_pool_hw,
    mostly_padding,
    pad_to_windows,
    window_partition,
    window_unpartition,
)

_LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Image to patch tokens: 7x7 conv with stride 4 and padding 3, output channels-last."""

    def __init__(self, *, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, S/4, S/4, embed_dim), contiguous.

        The conv runs channels-last so that its output is already the trunk's layout: every
        later op then reads contiguous memory (CPU, 1024 px: conv + position add 54 -> 30 ms).
        """
        return self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


# Tokens per chunk of windows in the CPU windowed attention (see MultiScaleAttention.forward).
_ATTENTION_CHUNK_TOKENS = 4096


class HieraMlp(nn.Module):
    """Two-layer GELU MLP (`layers.0`, `layers.1` as in the checkpoints)."""

    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)])
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        if not cpu_inference(x):
            return self.layers[1](self.act(self.layers[0](x)))
        # Blocks of rows (see `cpu_inference`): e.g. stage 1 of hiera_t at 1024 px, 65536 x 96
        # tokens, 248 -> 167 ms; stage 2 192 -> 138 ms; stage 3 135 -> 124 ms (one thread).
        fc1, fc2 = cast(nn.Linear, self.layers[0]), cast(nn.Linear, self.layers[1])
        return mlp_in_row_blocks(x, fc1, torch.ops.aten.gelu_, fc2)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled (the stage-transition block).

    With pooled queries the output has the pooled resolution, so the block downsamples.
    """

    def __init__(
        self, *, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        if dim_out % num_heads != 0:
            raise ValueError(f"dim_out {dim_out} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H', W', dim_out); H' = H // stride when pooling, else H.

        On the CPU (see `cpu_inference`) a batch of many windows is attended in chunks of
        about `_ATTENTION_CHUNK_TOKENS` tokens: each chunk's qkv stays in cache and no
        full-map qkv (hiera_t stage 1: 65536 x 576 floats) is allocated.
        """
        windows_per_chunk = max(1, _ATTENTION_CHUNK_TOKENS // (x.shape[1] * x.shape[2]))
        if not cpu_inference(x) or x.shape[0] <= windows_per_chunk:
            return self._attend(x)
        return torch.cat([self._attend(chunk) for chunk in x.split(windows_per_chunk)])

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` on one batch at once."""
        return self.attend_qkv(self.qkv(x))

    def attend_qkv(self, qkv: torch.Tensor, crop: tuple[int, int] | None = None) -> torch.Tensor:
        """Attention from already projected tokens: (B, H, W, 3 * dim_out) -> (B, H', W', dim_out).

        crop: (rows, cols) to keep of the (pooled) query grid; only those queries are attended
            (every token stays a key), and the output is (B, rows, cols, dim_out).
        """
        batch, height, width, _ = qkv.shape
        qkv = qkv.reshape(batch, height * width, 3, self.num_heads, -1)  # (B, HW, 3, h, d)
        q, k, v = qkv.unbind(2)  # each (B, HW, h, d)

        if self.q_stride is not None or crop is not None:
            q = q.reshape(batch, height, width, -1)  # (B, H, W, hd)
            if self.q_stride is not None:
                q = max_pool_hw(q, self.q_stride)  # (B, H', W', hd)
            if crop is not None:
                q = q[:, : crop[0], : crop[1]]
            height, width = q.shape[1:3]
            q = q.reshape(batch, height * width, self.num_heads, -1)  # (B, H'W', h, d)

        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # (B, h, H'W', d)
        out = out.transpose(1, 2).reshape(batch, height, width, -1)  # (B, H', W', dim_out)
        return self.proj(out)

    def attend_mostly_padded_windows(
        self, x: torch.Tensor, window_size: int, out_hw: tuple[int, int]
    ) -> torch.Tensor:
        """Windowed attention over a map that windowing mostly pads (CPU, see `mostly_padding`).

        The result of zero-padding `x` into windows, attending and cropping to `out_hw`, with
        less work: a zero token projects to the qkv bias, so only the real tokens are projected
        (the padding gets the bias), and only the queries the crop keeps are attended.

        Args:
            x: (B, H, W, dim) normalised tokens.
            window_size: side of the windows on `x`.
            out_hw: (H', W') of the output, the query grid after pooling.
        Returns:
            (B, H', W', dim_out).
        """
        qkv = pad_to_windows(self.qkv(x), window_size, self.qkv.bias)  # (B, Hp, Wp, 3 * dim_out)
        stride = (1, 1) if self.q_stride is None else self.q_stride
        out_window = (window_size // stride[0], window_size // stride[1])  # on the output grid
        out = x.new_empty(x.shape[0], *out_hw, self.proj.out_features)
        for i in range(-(-out_hw[0] // out_window[0])):  # windows holding kept queries
            for j in range(-(-out_hw[1] // out_window[1])):
                top, left = i * out_window[0], j * out_window[1]
                rows = min(out_window[0], out_hw[0] - top)
                cols = min(out_window[1], out_hw[1] - left)
                window = qkv[
                    :,
                    i * window_size : (i + 1) * window_size,
                    j * window_size : (j + 1) * window_size,
                ]  # (B, w, w, 3 * dim_out)
                out[:, top : top + rows, left : left + cols] = self.attend_qkv(window, (rows, cols))
        return out


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block: (windowed) attention, then MLP, both residual.

    When `dim != dim_out` the residual goes through a linear projection (`proj`) and, with
    `q_stride`, the same max-pooling as the queries, so both branches change size together.
    """

    def __init__(
        self,
        *,
        dim: int,
        dim_out: int,
        num_heads: int,
        window_size: int,
        q_stride: tuple[int, int] | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        """
        Args:
            dim, dim_out: input / output channels.
            num_heads: attention heads.
            window_size: side of the attention windows on the *input* map; 0 = global attention.
            q_stride: pooling stride of queries and residual, or None for no downsampling.
            mlp_ratio: MLP hidden width as a multiple of dim_out.
        """
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.attn = MultiScaleAttention(
            dim=dim, dim_out=dim_out, num_heads=num_heads, q_stride=q_stride
        )
        self.norm2 = nn.LayerNorm(dim_out, eps=_LAYER_NORM_EPS)
        self.mlp = HieraMlp(dim=dim_out, hidden_dim=int(dim_out * mlp_ratio))
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H', W', dim_out)."""
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            # The residual is taken after norm1 here (unlike the same-width blocks).
            shortcut = self.proj(x)  # (B, H, W, dim_out)
            if self.q_stride is not None:
                shortcut = max_pool_hw(shortcut, self.q_stride)  # (B, H', W', dim_out)

        if self.window_size > 0 and cpu_inference(x) and mostly_padding(x, self.window_size):
            # Micro stages 3-4: 256 real tokens in 784 padded ones (see the method).
            out_hw = (shortcut.shape[1], shortcut.shape[2])
            x = self.attn.attend_mostly_padded_windows(x, self.window_size, out_hw)
        elif self.window_size > 0:
            x, grid = window_partition(x, self.window_size)  # (B*nW, w, w, dim)
            # Query pooling shrinks every window, so re-assemble at the pooled size.
            x = self.attn(x)  # (B*nW, w', w', dim_out)
            out_hw = (shortcut.shape[1], shortcut.shape[2])
            x = window_unpartition(x, grid, out_hw)  # (B, H', W', dim_out)
        else:
            x = self.attn(x)  # (B, H', W', dim_out)

        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Hiera image trunk (SAM 2 variant with the windowed absolute position embedding)."""

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: tuple[int, ...] = (2, 3, 16, 3),
        global_att_blocks: tuple[int, ...] = (12, 16, 20),
        window_spec: tuple[int, ...] = (8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14),
        q_pool: int = 3,
        q_stride: tuple[int, int] = (2, 2),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
    ) -> None:
        """
        Args:
            embed_dim, num_heads: width and heads of the first stage.
            stages: number of blocks per stage.
            global_att_blocks: indices of blocks that attend globally instead of in windows.
            window_spec: window side per stage (on that stage's resolution).
            window_pos_embed_bkg_spatial_size: (h, w) of the learned background position
                embedding, bicubically resized to the patch grid.
            q_pool: number of stage transitions that downsample (pool queries), from the first.
            q_stride: pooling stride at those transitions.
            dim_mul, head_mul: width / head multipliers at each stage transition.
        """
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(
                f"stages ({len(stages)}) and window_spec ({len(window_spec)}) differ in length"
            )
        if not 0 <= q_pool <= len(stages) - 1:
            raise ValueError(f"q_pool must be in [0, {len(stages) - 1}], got {q_pool}")

        # Index of the last block of each stage.
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]

        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        # Windowed position embedding (arXiv 2311.05613): a coarse "background" embedding
        # resized to the grid plus a per-window embedding tiled over it.
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0])
        )
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None  # see _position_embedding

        self.blocks = nn.ModuleList()
        dim, heads, stage = embed_dim, num_heads, 0
        for i in range(sum(stages)):
            # The first block of a stage still sees the previous stage's resolution, so it uses
            # the previous stage's window (which its query pooling shrinks to the new one).
            window_size = 0 if i in global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * dim_mul)
                heads = int(heads * head_mul)
                stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=heads,
                    window_size=window_size,
                    q_stride=_pair(q_stride) if i in q_pool_blocks else None,
                )
            )
            dim = dim_out

        # Output channels per stage, deepest first (the FPN neck's `backbone_channel_list`).
        self.channel_list = [self.blocks[end].dim_out for end in self.stage_ends[::-1]]

    @classmethod
    def from_config(cls, cfg: HieraConfig) -> Hiera:
        return cls(
            embed_dim=cfg.embed_dim,
            num_heads=cfg.num_heads,
            stages=tuple(cfg.stages),
            global_att_blocks=tuple(cfg.global_att_blocks),
            window_spec=tuple(cfg.window_spec),
            window_pos_embed_bkg_spatial_size=_pair(cfg.window_pos_embed_bkg_spatial_size),
            q_pool=cfg.q_pool,
            q_stride=_pair(cfg.q_stride),
            dim_mul=cfg.dim_mul,
            head_mul=cfg.head_mul,
        )

    def _position_embedding(self, height: int, width: int) -> torch.Tensor:
        """(1, H, W, C) position embedding for an H x W patch grid.

        Without autograd it is a constant of the weights (a bicubic resize, ~5% of a 256-px
        frame's encoder time), so it is kept until the weights or the grid change; the
        parameters' version counters change on every in-place update (load_state_dict, an
        optimiser step).
        """
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._compute_position_embedding(height, width)
        key = (
            height,
            width,
            self.pos_embed.device,
            self.pos_embed.dtype,
            self.pos_embed.data_ptr(),
            self.pos_embed._version,
            self.pos_embed_window.data_ptr(),
            self.pos_embed_window._version,
        )
        if self._pos_cache is None or self._pos_cache[0] != key:
            self._pos_cache = (key, self._compute_position_embedding(height, width))
        return self._pos_cache[1]

    def _compute_position_embedding(self, height: int, width: int) -> torch.Tensor:
        window = self.pos_embed_window.shape[-1]
        if height % window or width % window:
            raise ValueError(
                f"patch grid {height}x{width} is not a multiple of the first window ({window}); "
                f"use an image size that is a multiple of {4 * window}"
            )
        background = F.interpolate(self.pos_embed, size=(height, width), mode="bicubic")
        tiled = self.pos_embed_window.tile(1, 1, height // window, width // window)  # (1, C, H, W)
        return (background + tiled).permute(0, 2, 3, 1).contiguous()  # (1, H, W, C)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs of a batch of normalised images.

        Args:
            x: (B, 3, S, S) float, ImageNet-normalised, S a multiple of 32.
        Returns:
            One (B, C_i, S / 4 / 2**i, S / 4 / 2**i) map per stage (with the default q_pool),
            highest resolution first; C_i = embed_dim * dim_mul**i.
        """
        x = self.patch_embed(x)  # (B, S/4, S/4, C)
        x = x + self._position_embedding(x.shape[1], x.shape[2])

        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))  # (B, C_i, H_i, W_i)
        return outputs


def _pair(values: Sequence[int]) -> tuple[int, int]:
    """(a, b) of a two-item config list (YAML gives lists)."""
    if len(values) != 2:
        raise ValueError(f"expected two values, got {list(values)}")
    return int(values[0]), int(values[1])
