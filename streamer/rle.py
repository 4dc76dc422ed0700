"""COCO RLE validation without decoding: a hostile `size` or `counts` must never make
pycocotools allocate a huge mask or read uninitialised memory (see `rle_runs`)."""

from __future__ import annotations

import numpy as np

# Largest mask (pixels) any message may describe, whatever the session's frame size: a
# 4096x4096 mask decodes to 16 MiB.
DEFAULT_MAX_MASK_PIXELS = 4096 * 4096


class RleError(ValueError):
    """A COCO RLE that is malformed, too large, or whose runs do not cover its size."""


# Longest run value pycocotools stores (uint32); a counts token holds at most 7 chunks.
_MAX_RUN = (1 << 32) - 1
_MAX_TOKEN_CHUNKS = 7


def rle_runs(size: tuple[int, int], counts: str, *, max_pixels: int) -> np.ndarray:
    """Validate a COCO RLE (`size` [h, w], `counts` string) without decoding it; returns its
    runs ((N,) int64).

    Checks, in this order and before allocating anything of the mask's size: the size is
    positive and at most `max_pixels`; `counts` is well formed (pycocotools' LEB128-like
    string: characters '0'..'o', every run terminated); no run is negative or above uint32;
    the runs sum to exactly h * w. Raises RleError. pycocotools itself checks none of this
    (it reads past the string or leaves pixels uninitialised).
    """
    h, w = size
    if h < 1 or w < 1:
        raise RleError(f"RLE size must be positive, got [{h}, {w}]")
    if h * w > max_pixels:
        raise RleError(f"RLE size {h}x{w} is above the limit of {max_pixels} pixels")
    codes = np.frombuffer(counts.encode("utf-8", errors="replace"), np.uint8)
    if codes.size == 0:
        raise RleError("RLE counts are empty")
    chunks = codes.astype(np.int64) - 48
    if chunks.min() < 0 or chunks.max() > 63:
        raise RleError("RLE counts hold a character outside '0'..'o'")
    more = (chunks & 0x20) != 0
    if more[-1]:
        raise RleError("RLE counts end inside a run")
    ends = np.flatnonzero(~more)  # last chunk of each token
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_TOKEN_CHUNKS:
        raise RleError("RLE counts hold a run that is too long")
    token = np.repeat(np.arange(ends.size), lengths)
    position = np.arange(codes.size) - starts[token]
    values = np.zeros(ends.size, np.int64)
    np.add.at(values, token, (chunks & 0x1F) << (5 * position))
    negative = (chunks[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])  # sign extension
    # pycocotools stores run m > 2 as its difference to run m - 2: undo that.
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0 or runs.max() > _MAX_RUN:
        raise RleError("RLE counts hold a negative or too large run")
    total = int(runs.sum())
    if total != h * w:
        raise RleError(f"RLE runs cover {total} pixels but the size {h}x{w} has {h * w}")
    return runs
