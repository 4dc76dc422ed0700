"""Axial 2D rotary position embedding (RoPE) for tokens of a flattened H x W feature grid.

Each head channel vector of length D is read as D/2 consecutive pairs (x[2i], x[2i+1]), i.e. as
D/2 points in the plane, and pair i is rotated by an angle that depends on the token's grid cell:

* pairs 0 .. D/4-1 rotate by `col * f_k` (k = i), the column (x) position,
* pairs D/4 .. D/2-1 rotate by `row * f_k` (k = i - D/4), the row (y) position,

with `f_k = 1 / theta**(4k / D)`. Token n of the flattened grid sits at row `n // W`, column
`n % W` (row-major, as `x.flatten(2)` of a (B, C, H, W) map). Because a rotation by `a` followed
by the dot product with a rotation by `b` only depends on `a - b`, query-key scores depend on the
relative offset of the two cells.

The math is the complex product `(x[2i] + j x[2i+1]) * exp(j * angle_i)` of the official
implementation, written with real cos/sin tables so that `torch.compile` sees plain float ops.
"""

from __future__ import annotations

import torch
from torch import Tensor


def axial_rope_angles(
    head_dim: int,
    height: int,
    width: int,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Rotation angles of every grid cell, (height * width, head_dim // 2) float32 radians.

    Row n is the flattened cell (n // width, n % width); column layout as in the module docstring.
    """
    if head_dim % 4 != 0:
        raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
    # Same float32 expression as the official table so the angles agree bit for bit.
    exponents = torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim
    freqs = 1.0 / (theta**exponents)  # (D/4,)
    cell = torch.arange(height * width, device=device)
    cols = (cell % width).float()  # (HW,)
    rows = torch.div(cell, width, rounding_mode="floor").float()  # (HW,)
    return torch.cat([torch.outer(cols, freqs), torch.outer(rows, freqs)], dim=-1)  # (HW, D/2)


def axial_rope_cos_sin(
    head_dim: int,
    height: int,
    width: int,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """cos and sin of `axial_rope_angles`, each (height * width, head_dim // 2) float32."""
    angles = axial_rope_angles(head_dim, height, width, theta, device)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the channel pairs of `x` (..., N, D) by the per-token angles given as cos/sin (N, D/2).

    Computed in float32 and returned in `x.dtype`.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., N, D/2, 2)
    real, imag = pairs.unbind(-1)  # (..., N, D/2) each
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)  # (..., N, D)
