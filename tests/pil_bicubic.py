"""Pillow's 8-bit BICUBIC resize in numpy (test helper: Pillow is not a dependency).

The official video loader resizes frames with PIL; the full-size reference was made from those
pixels, so the test reproduces them exactly (fixed-point filter, 22 fractional bits).
"""

from __future__ import annotations

import numpy as np

_PRECISION_BITS = 22


def _cubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _filter_rows(in_size: int, out_size: int) -> list[tuple[int, np.ndarray]]:
    """For each output pixel: first input index and integer filter taps."""
    scale = in_size / out_size
    support_scale = max(scale, 1.0)
    support = 2.0 * support_scale
    rows = []
    for out_x in range(out_size):
        center = (out_x + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - first
        taps = [_cubic((x + first - center + 0.5) / support_scale) for x in range(count)]
        total = sum(taps)
        taps = [t / total for t in taps] if total else taps
        fixed = [int(t * (1 << _PRECISION_BITS) + (0.5 if t >= 0 else -0.5)) for t in taps]
        rows.append((first, np.array(fixed, dtype=np.int64)))
    return rows


def _resample(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    data = np.moveaxis(image, axis, 0).astype(np.int64)
    out = np.empty((out_size,) + data.shape[1:], dtype=np.int64)
    for i, (first, taps) in enumerate(_filter_rows(data.shape[0], out_size)):
        acc = (1 << (_PRECISION_BITS - 1)) + np.tensordot(taps, data[first : first + len(taps)], 1)
        out[i] = np.clip(acc >> _PRECISION_BITS, 0, 255)
    return np.moveaxis(out.astype(np.uint8), 0, axis)


def resize_bicubic(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) uint8, horizontal pass first as Pillow does."""
    h, w = size_hw
    if image.shape[1] != w:
        image = _resample(image, w, 1)
    if image.shape[0] != h:
        image = _resample(image, h, 0)
    return image
