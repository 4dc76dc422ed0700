"""Attention building blocks and the two-way transformer of the SAM mask decoder.

Also home of the small layers shared by the SAM heads (`MLP`, `LayerNorm2d`).

`Attention` is also the base of the RoPE attention in the memory attention module, so it exposes
its three stages separately: `project` (linear maps + head split), `attend` (scaled dot-product
attention + head merge + output map) and `forward` (both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Key count up to which CPU attention takes `_few_keys_attention` (see there).
FEW_KEYS = 16


def _few_keys_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention for many queries over a few keys: (B, h, Nq, d) x (B, h, Nk, d).

    The mask decoder's image tokens (Nq = 256..4096 per object) attend to ~8 prompt tokens. CPU
    SDPA kernels pay a fixed cost per query row, so here the scores are laid out (Nk, Nq) and the
    softmax runs down the short key axis, vectorised along the queries: ~7x faster for 16
    objects, the same values up to rounding.
    """
    scores = (k * q.shape[-1] ** -0.5) @ q.transpose(-1, -2)  # (B, h, Nk, Nq)
    return scores.softmax(dim=-2).transpose(-1, -2) @ v  # (B, h, Nq, d)


class Attention(nn.Module):
    """Multi-head attention whose inner width may be smaller than the token width.

    Queries have `embedding_dim` channels; keys/values have `kv_in_dim` channels (default:
    `embedding_dim`). All three are projected to `embedding_dim // downsample_rate` channels,
    split into `num_heads` heads, attended, and projected back to `embedding_dim`.
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} must divide the inner width {self.internal_dim} "
                f"(embedding_dim={embedding_dim} // downsample_rate={downsample_rate})"
            )
        self.dropout_p = dropout

        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    @property
    def head_dim(self) -> int:
        return self.internal_dim // self.num_heads

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, N, internal_dim) -> (B, num_heads, N, head_dim)."""
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        """(B, num_heads, N, head_dim) -> (B, N, num_heads * head_dim)."""
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def project(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project q (B, Nq, embedding_dim), k and v (B, Nk, kv_in_dim) and split heads.

        Returns q (B, heads, Nq, head_dim), k and v (B, heads, Nk, head_dim).
        """
        return (
            self.split_heads(self.q_proj(q)),
            self.split_heads(self.k_proj(k)),
            self.split_heads(self.v_proj(v)),
        )

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention over already projected heads; returns (B, Nq, embedding_dim)."""
        dropout_p = self.dropout_p if self.training else 0.0
        if dropout_p == 0.0 and q.device.type == "cpu" and k.shape[-2] <= FEW_KEYS < q.shape[-2]:
            out = _few_keys_attention(q, k, v)  # (B, h, Nq, d)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, h, Nq, d)
        return self.out_proj(self.merge_heads(out))  # (B, Nq, embedding_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: (B, Nq, embedding_dim); k, v: (B, Nk, kv_in_dim) -> (B, Nq, embedding_dim)."""
        return self.attend(*self.project(q, k, v))


class MLP(nn.Module):
    """Stack of `num_layers` linear layers with `activation` between them (not after the last)."""

    def __init__(
        self,
        *,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(widths[:-1], widths[1:])
        )
        self.act = activation()
        # The IoU head of SAM 2 squashes its scores into [0, 1].
        self.sigmoid_output = sigmoid_output

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., input_dim) -> (..., output_dim)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        if self.sigmoid_output:
            x = torch.sigmoid(x)
        return x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map, independently at every pixel."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W), in the memory format of `x`."""
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Channels innermost: one fused layer norm over them, several times faster than
            # the per-pixel reductions below.
            pixels = x.permute(0, 2, 3, 1)  # (B, H, W, C), contiguous
            normed = F.layer_norm(pixels, (x.shape[1],), self.weight, self.bias, self.eps)
            return normed.permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)  # (B, 1, H, W)
        var = (x - mean).pow(2).mean(1, keepdim=True)  # biased, like nn.LayerNorm
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TwoWayAttentionBlock(nn.Module):
    """One round of token/image exchange in the mask decoder.

    Four steps, each followed by a residual add and a LayerNorm: token self-attention,
    tokens -> image cross-attention, token MLP, image -> tokens cross-attention. Positional
    encodings are re-added to queries/keys before every attention (not to values).
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim=embedding_dim, num_heads=num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(
            input_dim=embedding_dim,
            hidden_dim=mlp_dim,
            output_dim=embedding_dim,
            num_layers=2,
            activation=activation,
        )
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        # The first block's tokens *are* their positional encoding (query_pe == queries), so
        # it self-attends without adding it again and without a residual.
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> tuple[Tensor, Tensor]:
        """queries, query_pe: (B, Nq, C); keys, key_pe: (B, HW, C) -> updated (queries, keys)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)  # (B, Nq, C)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))  # (B, HW, C)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Transformer in which prompt tokens and image tokens attend to each other.

    SAM 2 always uses depth 2, 8 heads, MLP width 2048 with ReLU and cross-attention
    downsample rate 2 (these are fixed in the official builder, not part of the config).
    """

    def __init__(
        self,
        *,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Run the token/image exchange.

        Args:
            image_embedding: (B, C, H, W) image features.
            image_pe: (B, C, H, W) positional encoding of the image grid.
            point_embedding: (B, N, C) output + prompt tokens; also used as their positional
                encoding.

        Returns:
            queries (B, N, C) and keys (B, HW, C), the updated tokens and image features.
        """
        # Contiguous token-major copies: every later op works on (B, HW, C) rows, which is
        # much faster than on the transposed (B, C, HW) layout of the feature maps.
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()  # (B, HW, C)
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()  # (B, HW, C)
        queries = point_embedding

        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)

        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys  # (B, N, C), (B, HW, C)
