"""Image encoder: Hiera trunk + FPN neck, producing the multi-scale features SAM 2 consumes.

For a (B, 3, S, S) input the trunk gives 4 stages at strides 4/8/16/32; the neck projects each
to `d_model` channels (adding top-down features on some levels) and attaches a sine position
encoding; `scalp` drops the lowest-resolution levels (official models keep strides 4/8/16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sam2_video.config import SAM2Config
from sam2_video.modeling.hiera import Hiera
from sam2_video.modeling.position_encoding import PositionEmbeddingSine


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1 `conv` to an NCHW map, as a matmul over channels when that map is stored
    channels-last on the CPU.

    Args:
        conv: a Conv2d with kernel_size 1, stride 1, no padding, groups 1.
        x: (B, C_in, H, W) float; the fast path needs channels-last memory (as the Hiera
            stage outputs, permuted (B, H, W, C) maps).
    Returns:
        (B, C_out, H, W); channels-last in memory when the fast path ran.

    On such input torch's CPU conv falls back to im2col (hiera_t 1024 px neck: 160 ms in
    `_slow_conv2d_forward`); the matmul on the (B, H, W, C) view needs no copy.
    """
    hwc = x.permute(0, 2, 3, 1)  # (B, H, W, C_in)
    if x.device.type != "cpu" or not hwc.is_contiguous() or torch.compiler.is_compiling():
        return conv(x)
    weight = conv.weight.view(conv.out_channels, conv.in_channels)  # (C_out, C_in)
    return F.linear(hwc, weight, conv.bias).permute(0, 3, 1, 2)


@dataclass
class BackboneOutput:
    """Multi-scale image features.

    Attributes:
        vision_features: (B, d_model, S/16, S/16) lowest-resolution kept level (the image
            embedding the mask decoder and memory attention work on).
        vision_pos_enc: per kept level, (B, d_model, H_l, W_l) sine position encoding, highest
            resolution first.
        backbone_fpn: per kept level, (B, d_model, H_l, W_l) FPN features, highest resolution
            first (strides 4, 8, 16 for official models); `backbone_fpn[-1] is vision_features`.
    """

    vision_features: torch.Tensor
    vision_pos_enc: list[torch.Tensor]
    backbone_fpn: list[torch.Tensor]


class FpnNeck(nn.Module):
    """Feature pyramid over the trunk stages (1x1 lateral convs, no output convs).

    Levels listed in `fpn_top_down_levels` add the 2x-upsampled output of the next coarser
    level to their lateral features; the other levels keep lateral features only.
    """

    def __init__(
        self,
        *,
        position_encoding: nn.Module,
        d_model: int,
        backbone_channel_list: list[int] | tuple[int, ...],
        fpn_top_down_levels: list[int] | tuple[int, ...] | None = None,
        fpn_interp_model: str = "bilinear",
    ) -> None:
        """
        Args:
            position_encoding: maps a (B, d_model, H, W) level to its (B, d_model, H, W) encoding.
            d_model: output channels of every level.
            backbone_channel_list: trunk channels per stage, deepest stage first;
                `convs[i]` consumes `backbone_channel_list[i]`.
            fpn_top_down_levels: level indices (0 = highest resolution) that receive top-down
                features; None = all levels.
            fpn_interp_model: `F.interpolate` mode of the 2x top-down upsampling.
        """
        super().__init__()
        self.position_encoding = position_encoding
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList()
        for channels in self.backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(channels, d_model, kernel_size=1))
            self.convs.append(lateral)
        num_levels = len(self.backbone_channel_list)
        self.fpn_top_down_levels = (
            list(range(num_levels)) if fpn_top_down_levels is None else list(fpn_top_down_levels)
        )
        self.fpn_interp_model = fpn_interp_model

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            xs: trunk stage outputs, highest resolution first; xs[i] is
                (B, backbone_channel_list[-1 - i], H_i, W_i) with H_i = 2 * H_{i+1}.
        Returns:
            (features, position encodings): per level (B, d_model, H_i, W_i), highest
            resolution first; encodings have the features' dtype.
        """
        num_levels = len(self.convs)
        if len(xs) != num_levels:
            raise ValueError(f"expected {num_levels} trunk levels, got {len(xs)}")
        features: list[torch.Tensor] = [None] * num_levels  # type: ignore[list-item]
        pos: list[torch.Tensor] = [None] * num_levels  # type: ignore[list-item]
        coarser = None
        # Coarsest level first, so each level can take the one below it.
        for level in range(num_levels - 1, -1, -1):
            conv = cast(nn.Conv2d, self.convs[num_levels - 1 - level].conv)
            lateral = pointwise_conv(conv, xs[level])  # (B, d, H_l, W_l)
            if level in self.fpn_top_down_levels and coarser is not None:
                # Upsampled in float32 (as the official neck), so under bf16 autocast the sum
                # is promoted to float32.
                top_down = F.interpolate(
                    coarser.to(torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )  # (B, d, H_l, W_l)
                coarser = lateral + top_down
            else:
                coarser = lateral
            features[level] = coarser
            pos[level] = self.position_encoding(coarser).to(coarser.dtype)
        return features, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; drops the `scalp` lowest-resolution levels."""

    def __init__(self, *, trunk: Hiera, neck: FpnNeck, scalp: int = 0) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"trunk channels {trunk.channel_list} do not match neck backbone_channel_list "
                f"{neck.backbone_channel_list}"
            )
        if not 0 <= scalp < len(neck.backbone_channel_list):
            raise ValueError(f"scalp must keep at least one level, got {scalp}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        """
        Args:
            images: (B, 3, S, S) float32, ImageNet-normalised, model input frame.
        Returns:
            BackboneOutput with len(levels) - scalp levels.
        """
        features, pos = self.neck(self.trunk(images))
        keep = len(features) - self.scalp
        features, pos = features[:keep], pos[:keep]
        return BackboneOutput(
            vision_features=features[-1], vision_pos_enc=pos, backbone_fpn=features
        )


def build_image_encoder(cfg: SAM2Config) -> ImageEncoder:
    """Image encoder of the given architecture (randomly initialised; load weights separately)."""
    neck_cfg = cfg.neck
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=neck_cfg.pos_num_feats, temperature=neck_cfg.pos_temperature
        ),
        d_model=neck_cfg.d_model,
        backbone_channel_list=neck_cfg.backbone_channel_list,
        fpn_top_down_levels=neck_cfg.fpn_top_down_levels,
        fpn_interp_model=neck_cfg.fpn_interp_model,
    )
    return ImageEncoder(trunk=Hiera.from_config(cfg.hiera), neck=neck, scalp=neck_cfg.scalp)
