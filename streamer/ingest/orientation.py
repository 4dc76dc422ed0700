"""Rotation metadata: frames turned upright as a player shows them.

Phones store video in the sensor's orientation and a display matrix saying how to turn it;
FFmpeg reports its angle as `frame.rotation` (degrees, counterclockwise). Tracking the stored
frame would put a client's clicks, made on the upright picture, in the wrong place.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def quarter_turns(rotation: float | None) -> int:
    """Counterclockwise quarter turns (0-3) for a display rotation in degrees; angles that are
    not multiples of 90 are rounded to the nearest one."""
    if not rotation:
        return 0
    return int(round(float(rotation) / 90.0)) % 4


def oriented(image: np.ndarray, decoded: Any) -> np.ndarray:
    """`image` ((H, W, 3) uint8 RGB of the av frame `decoded`) turned upright by the frame's
    rotation metadata: (H, W, 3) or (W, H, 3), C-contiguous."""
    turns = quarter_turns(getattr(decoded, "rotation", 0))
    if turns == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, turns))


def upright_rgb(decoded: Any) -> np.ndarray:
    """The av video frame `decoded` as (H, W, 3) uint8 RGB, turned upright (`oriented`).
    Live sources hand `functools.partial(upright_rgb, decoded)` to a `PendingFrame`, so
    dropped frames are neither converted nor rotated."""
    return oriented(decoded.to_ndarray(format="rgb24"), decoded)
