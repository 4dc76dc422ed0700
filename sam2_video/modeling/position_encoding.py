"""Position encodings: the 2D sine grid of the FPN neck / memory encoder, and the random-Fourier
encoding of the prompt encoder.

Neither holds learned weights. The only state that reaches checkpoints is the random Fourier
matrix `positional_encoding_gaussian_matrix` of `PositionEmbeddingRandom` (a buffer).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2D sine/cosine encoding of a feature map's (row, column) grid.

    Half of the output channels encode the row (y), the other half the column (x). Along each
    axis, positions 1..N are optionally normalised to (0, scale]; channel pair (2k, 2k+1) holds
    sin/cos of `pos / temperature ** (2k / (num_pos_feats / 2))`.
    """

    # Feature-map sizes met by one model are few (one per FPN level); keep a handful per module.
    _MAX_CACHED_GRIDS = 8

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        """
        Args:
            num_pos_feats: total output channels (even; split equally between y and x).
            temperature: base of the geometric frequency progression.
            normalize: map positions to (0, scale] so the encoding does not depend on the size.
            scale: range of the normalised positions (2*pi when None); needs `normalize`.
        """
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: OrderedDict[tuple[int, int, torch.device], torch.Tensor] = OrderedDict()

    def _axis_encoding(self, positions: torch.Tensor) -> torch.Tensor:
        """(..., ) float32 positions -> (..., num_pos_feats // 2) interleaved sin/cos."""
        half = self.num_pos_feats // 2
        # Each frequency is shared by one sin channel and the following cos channel.
        exponent = 2 * (torch.arange(half, dtype=torch.float32, device=positions.device) // 2)
        dim_t = self.temperature ** (exponent / half)  # (half,)
        angles = positions[..., None] / dim_t  # (..., half)
        sin_cos = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1)
        return sin_cos.flatten(-2)  # (..., half): sin, cos, sin, cos, ...

    def _grid_encoding(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(num_pos_feats, height, width) float32 encoding, cached per size and device."""
        key = (height, width, device)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached

        y = torch.arange(1, height + 1, dtype=torch.float32, device=device)  # (H,)
        x = torch.arange(1, width + 1, dtype=torch.float32, device=device)  # (W,)
        if self.normalize:
            eps = 1e-6
            y = y / (y[-1:] + eps) * self.scale
            x = x / (x[-1:] + eps) * self.scale
        pos_y = self._axis_encoding(y)[:, None, :].expand(height, width, -1)  # (H, W, C/2)
        pos_x = self._axis_encoding(x)[None, :, :].expand(height, width, -1)  # (H, W, C/2)
        grid = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1).contiguous()  # (C, H, W)

        self._cache[key] = grid
        if len(self._cache) > self._MAX_CACHED_GRIDS:
            self._cache.popitem(last=False)
        return grid

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoding for the grid of `x`.

        Args:
            x: (B, C, H, W) feature map; only its batch size, spatial size and device are used.
        Returns:
            (B, num_pos_feats, H, W) float32, a fresh tensor (safe to modify in place).
        """
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        grid = self._grid_encoding(height, width, x.device)  # (C, H, W)
        return grid[None].repeat(batch, 1, 1, 1)  # (B, C, H, W)


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier-feature encoding of 2D points (the SAM prompt encoder's position encoding).

    A point normalised to [0, 1]^2 is mapped to [-1, 1]^2, projected by a fixed Gaussian matrix
    (2, num_pos_feats), scaled by 2*pi, and encoded as [sin, cos] (2 * num_pos_feats channels).
    """

    positional_encoding_gaussian_matrix: torch.Tensor  # (2, num_pos_feats) buffer

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        """
        Args:
            num_pos_feats: number of random frequencies (output has twice as many channels).
            scale: standard deviation of the random frequencies (1.0 when None or <= 0).
        """
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        # Part of official checkpoints: load it, never re-draw it.
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _encode_unit_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) float32 (x, y) in [0, 1] -> (..., 2 * num_pos_feats)."""
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix  # (..., F)
        projected = 2 * math.pi * projected
        return torch.cat((projected.sin(), projected.cos()), dim=-1)  # (..., 2F)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the pixel centres of an (H, W) grid.

        Args:
            size: (H, W) of the grid (e.g. the image-embedding size).
        Returns:
            (2 * num_pos_feats, H, W) float32 on the buffer's device.
        """
        height, width = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height  # (H,)
        x = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width  # (W,)
        grid = torch.stack(
            (x[None, :].expand(height, width), y[:, None].expand(height, width)), dim=-1
        )  # (H, W, 2) as (x, y)
        return self._encode_unit_coords(grid).permute(2, 0, 1)  # (2F, H, W)

    def forward_with_coords(
        self, coords: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Encoding of points given in pixels.

        Args:
            coords: (B, N, 2) (x, y) in pixels of the model input frame (0..W, 0..H). Any
                pixel-centre offset (+0.5) must already be applied by the caller.
            image_size: (H, W) of that frame.
        Returns:
            (B, N, 2 * num_pos_feats) float32.
        """
        height, width = image_size
        unit = coords / coords.new_tensor([width, height])  # (B, N, 2) in [0, 1]
        return self._encode_unit_coords(unit.to(torch.float32))
