"""Channels-last feature maps and square windows: padding, partitioning, pooling.

Maps are (B, H, W, C). Windows are cut row-major over the window grid from the map padded
bottom/right to whole windows, as the Hiera trunk's windowed attention needs them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def max_pool_hw(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool a channels-last map: (B, H, W, C) -> (B, H // sh, W // sw, C).

    The maximum over the sh * sw strided sub-grids, i.e. `max_pool2d` with kernel = stride
    (floor mode); working on the channels-last map directly avoids `max_pool2d`'s copy of a
    strided (sliced-from-qkv) input into NCHW (hiera_t at 1024 px: 45 ms of a 5.5 s forward).
    """
    sh, sw = stride
    height, width = x.shape[1] // sh * sh, x.shape[2] // sw * sw
    out = x[:, 0:height:sh, 0:width:sw]
    for i in range(sh):
        for j in range(sw):
            if i or j:
                out = torch.maximum(out, x[:, i:height:sh, j:width:sw])
    return out


def pad_to_windows(
    x: torch.Tensor, window_size: int, pad_value: torch.Tensor | None = None
) -> torch.Tensor:
    """Pad a (B, H, W, C) map bottom/right to multiples of `window_size` with `pad_value` (C,)
    (None = zeros); the map itself if nothing is missing."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = -height % window_size, -width % window_size
    if not (pad_h or pad_w):
        return x
    if pad_value is None:
        return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded = pad_value.expand(batch, height + pad_h, width + pad_w, channels).clone()
    padded[:, :height, :width] = x
    return padded


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a map into non-overlapping square windows, zero-padding bottom/right as needed.

    Args:
        x: (B, H, W, C).
        window_size: side of the windows.
    Returns:
        windows: (B * nh * nw, window_size, window_size, C), row-major over the window grid.
        grid: (nh, nw), the number of windows along H and W.
    """
    x = pad_to_windows(x, window_size)
    batch, height, width, channels = x.shape
    nh, nw = height // window_size, width // window_size
    x = x.view(batch, nh, window_size, nw, window_size, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (nh, nw)


def mostly_padding(x: torch.Tensor, window_size: int) -> bool:
    """True if windowing the (B, H, W, C) map `x` at least doubles its token count."""
    height, width = x.shape[1:3]
    padded = (height + -height % window_size) * (width + -width % window_size)
    return padded >= 2 * height * width


def window_unpartition(
    windows: torch.Tensor, grid: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`, then crop the padding.

    Args:
        windows: (B * nh * nw, w, w, C); `w` may be smaller than at partition time when the
            queries were pooled inside each window.
        grid: (nh, nw) from `window_partition`.
        hw: (H, W) to crop the re-assembled (nh * w, nw * w) map to.
    Returns:
        (B, H, W, C).
    """
    nh, nw = grid
    window_size, channels = windows.shape[1], windows.shape[-1]
    batch = windows.shape[0] // (nh * nw)
    x = windows.reshape(batch, nh, nw, window_size, window_size, channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, nh * window_size, nw * window_size, channels)
    height, width = hw
    return x[:, :height, :width, :]
