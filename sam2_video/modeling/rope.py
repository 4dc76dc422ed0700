"""Axial 2D rotary position embedding (RoPE) for tokens of a flattened H x W feature grid.

Each head channel vector of length D is read as D/2 consecutive pairs (x[2i], x[2i+1]), i.e. as
D/2 points in the plane, and pair i is rotated by an angle that depends on the token's grid cell:

* pairs 0 .. D/4-1 rotate by `col * f_k` (k = i), the column (x) position,
* pairs D/4 .. D/2-1 rotate by `row * f_k` (k = i - D/4), the row (y) position,

with `f_k = 1 / theta**(4k / D)`. Token n of the flattened grid sits at row `n // W`, column
`n % W` (row-major, as `x.flatten(2)` of a (B, C, H, W) map). Because a rotation by `a` followed
by the dot product with a rotation by `b` only depends on `a - b`, query-key scores depend on the
relative offset of the two cells.

The rotation is the complex product `(x[2i] + j x[2i+1]) * exp(j * angle_i)`. With many tracked
objects every memory key is rotated on every frame, so `apply_rope` runs it as one complex
multiply when eager (a single pass) and on real cos/sin planes under `torch.compile` (which
fuses real ops but has no code generation for complex ones).
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


def axial_rope_rotation(
    head_dim: int,
    height: int,
    width: int,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The rotation of every grid cell, (height * width, head_dim // 2, 2) float32: the unit
    complex numbers `exp(j * axial_rope_angles(...))` as (real, imaginary) = (cos, sin) pairs."""
    angles = axial_rope_angles(head_dim, height, width, theta, device)
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def repeat_rotation(rotation: Tensor, repeats: int, num_unrotated: int) -> Tensor:
    """Rotation of a key sequence: `repeats` copies of a grid's rotation (N, D/2, 2), then
    `num_unrotated` identity rows (cos, sin) = (1, 0), for tokens that keep their values
    (e.g. object pointers).

    Returns (repeats * N + num_unrotated, D/2, 2) float32.
    """
    identity = torch.zeros(num_unrotated, *rotation.shape[1:], device=rotation.device)
    identity[..., 0] = 1.0
    return torch.cat([rotation.repeat(repeats, 1, 1), identity])


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate the channel pairs of `x` (..., N, D) by the per-token rotation (N, D/2, 2).

    Computed in float32 and returned in `x.dtype`. The identity rotation is exact, so unrotated
    tokens keep their values bit for bit.
    """
    if torch.compiler.is_compiling():
        # Inductor generates no code for complex ops (it would run eager kernels between its
        # fused ones); on real planes it fuses the rotation with the neighbouring ops.
        return rotate_pairs_real(x, rotation)
    # Eagerly, one complex multiply is a single pass, several times faster than real planes.
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (..., N, D/2)
    rotated = pairs * torch.view_as_complex(rotation)
    return torch.view_as_real(rotated).flatten(-2).type_as(x)  # (..., N, D)


def rotate_pairs_real(x: Tensor, rotation: Tensor) -> Tensor:
    """`apply_rope` with real products only (the same values up to rounding)."""
    cos, sin = rotation.unbind(-1)  # (N, D/2) each
    real, imag = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (..., N, D/2) each
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)  # (..., N, D)
