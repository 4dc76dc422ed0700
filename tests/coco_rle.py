"""The tests' one decoder of COCO RLE masks in their JSON form, by pycocotools (the reference
implementation, not the code under test)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_api


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """`{"size": [H, W], "counts": str}` (compressed COCO RLE) -> (H, W) bool mask."""
    return mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
