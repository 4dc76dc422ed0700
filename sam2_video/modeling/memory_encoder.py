"""Memory encoder: fuses a frame's stride-16 features with its mask into memory tokens.

mask (B, 1, S, S) --MaskDownSampler--> (B, C, S/16, S/16) --+
pix_feat (B, C, S/16, S/16) --pix_feat_proj (1x1)--------------+--> Fuser (ConvNeXt blocks)
    --> out_proj (1x1, C -> mem_dim) --> features (B, mem_dim, S/16, S/16) + sine position encoding
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from sam2_video.config import SAM2Config
from sam2_video.modeling.position_encoding import PositionEmbeddingSine
from sam2_video.modeling.transformer import LayerNorm2d


class MaskDownSampler(nn.Module):
    """Reduces a mask by `total_stride` with strided convs, then projects it to `embed_dim`.

    Each of the log_stride(total_stride) stages is Conv(stride) -> LayerNorm2d -> GELU and
    multiplies the channel count by stride**2 (1 -> 4 -> 16 -> 64 -> 256 for stride 2, total 16),
    so no information is squeezed out by the downsampling; a final 1x1 conv maps to `embed_dim`.
    State-dict keys: `encoder.{0,1,3,4,...}` (GELUs at indices 2, 5, ... have no weights).
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        kernel_size: int = 3,
        stride: int = 2,
        padding: int = 1,
        total_stride: int = 16,
    ) -> None:
        super().__init__()
        num_stages = round(math.log(total_stride, stride))
        if stride**num_stages != total_stride:
            raise ValueError(f"total_stride={total_stride} is not a power of stride={stride}")
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(num_stages):
            out_channels = channels * stride**2
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size, stride=stride, padding=padding),
                LayerNorm2d(out_channels, eps=1e-6),
                nn.GELU(),
            ]
            channels = out_channels
        layers.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, masks: Tensor) -> Tensor:
        """masks: (B, 1, S, S) -> (B, embed_dim, S / total_stride, S / total_stride), in
        channels_last memory format.

        Stages after the first run channels_last, where their convs and LayerNorms are fastest
        (on CPU the downsampler of 16 objects takes ~2/3 of the time); the first stage stays
        channels-first, as its LayerNorm over 4 channels is faster that way.
        """
        *stages, proj = self.encoder
        x = masks
        for conv, norm, act in zip(stages[0::3], stages[1::3], stages[2::3]):
            if cast(nn.Conv2d, conv).in_channels > 1:
                x = x.contiguous(memory_format=torch.channels_last)
            x = norm(conv(x))
            if x.is_contiguous():
                x = act(x)
            else:  # elementwise ops run faster on the contiguous (B, H, W, C) view
                x = act(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return proj(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv -> LayerNorm -> 4x MLP (GELU) -> layer scale, residual."""

    def __init__(
        self,
        *,
        dim: int,
        kernel_size: int = 7,
        layer_scale_init_value: float = 1e-6,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        # The pointwise convs are Linear layers on channels-last pixels (checkpoint format).
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, dim, H, W) -> (B, dim, H, W)."""
        h = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, H, W, dim)
        h = self.gamma * self.pwconv2(self.act(self.pwconv1(h)))  # (B, H, W, dim)
        return x + h.permute(0, 3, 1, 2)  # (B, dim, H, W)


class Fuser(nn.Module):
    """A stack of `CXBlock`s that mixes the summed frame features and mask embedding."""

    def __init__(self, *, dim: int, num_layers: int = 2, kernel_size: int = 7) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CXBlock(dim=dim, kernel_size=kernel_size) for _ in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, dim, H, W) -> (B, dim, H, W)."""
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Turns (frame features, mask) into memory features of `out_dim` channels + their encoding.

    The mask downsampler and fuser both work at `in_dim` channels (the mask embedding is added to
    the projected frame features).
    """

    def __init__(
        self,
        *,
        out_dim: int,
        in_dim: int = 256,
        fuser_num_layers: int = 2,
        fuser_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(embed_dim=in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(dim=in_dim, num_layers=fuser_num_layers, kernel_size=fuser_kernel_size)
        self.position_encoding = PositionEmbeddingSine(num_pos_feats=out_dim)
        # Official checkpoints have no out_proj weights when no projection is needed.
        self.out_proj = (
            nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()
        )

    def forward(
        self, pix_feat: Tensor, masks: Tensor, skip_mask_sigmoid: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Encode one frame's memory.

        Args:
            pix_feat: (B, in_dim, h, w) stride-16 frame features (before memory attention), or
                (1, in_dim, h, w) for B masks on the same frame (projected once).
            masks: (B, 1, 16h, 16w) mask logits in the model input frame.
            skip_mask_sigmoid: the caller already mapped the masks to their final range
                (SAM 2 feeds `20 * prob - 10` or a binarized mask), so no sigmoid here.

        Returns:
            vision_features (B, out_dim, h, w) and vision_pos_enc (B, out_dim, h, w), both in
            the dtype of the features.
        """
        if not skip_mask_sigmoid:
            # Probabilities look more like the binary masks seen in training than raw logits.
            masks = torch.sigmoid(masks)
        mask_embed = self.mask_downsampler(masks)  # (B, in_dim, h, w), channels_last
        pix_feat = pix_feat.contiguous(memory_format=torch.channels_last)
        x = self.pix_feat_proj(pix_feat) + mask_embed  # (B, in_dim, h, w), channels_last
        x = self.out_proj(self.fuser(x)).contiguous()  # (B, out_dim, h, w)
        pos = self.position_encoding(x).to(x.dtype)  # (B, out_dim, h, w)
        return x, pos


def build_memory_encoder(cfg: SAM2Config) -> MemoryEncoder:
    """Memory encoder of the given model config (official weights load into it strictly)."""
    ecfg = cfg.memory_encoder
    if ecfg.mask_downsampler_embed_dim != ecfg.in_dim:
        raise ValueError(
            f"{cfg.name}: mask_downsampler_embed_dim={ecfg.mask_downsampler_embed_dim} must equal "
            f"in_dim={ecfg.in_dim} (the mask embedding is added to the frame features)"
        )
    if ecfg.pos_num_feats != ecfg.out_dim:
        raise ValueError(
            f"{cfg.name}: pos_num_feats={ecfg.pos_num_feats} must equal out_dim={ecfg.out_dim} "
            "(the position encoding is added to the memory features)"
        )
    return MemoryEncoder(
        out_dim=ecfg.out_dim,
        in_dim=ecfg.in_dim,
        fuser_num_layers=ecfg.fuser_num_layers,
        fuser_kernel_size=ecfg.fuser_kernel_size,
    )
