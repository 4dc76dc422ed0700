"""A long live stream runs at constant memory.

5,000 frames through the micro model with two objects: after warm-up the session holds exactly
the same number of tensors and bytes, and the process RSS stays flat. The model runs at its
256 x 256 input size whatever the frame size, so this takes ~0.05-0.1 s of CPU per frame
(minutes in all): it is marked slow.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch import Tensor

from sam2_video.streaming import SessionOptions, StreamingSession

MICRO = Path(__file__).parent / "fixtures" / "reference" / "micro"

NUM_FRAMES = 5000
WARM_UP_FRAME = 100
FRAME_SIZE = 64
# Allocator noise: freed blocks are not always returned to the OS at once.
RSS_TOLERANCE_BYTES = 8 * 2**20
RSS_TOLERANCE_FRACTION = 0.03


def _tensors(root: object) -> Iterator[Tensor]:
    """Every tensor reachable from `root` through dataclasses, dicts, lists, tuples and sets."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Tensor):
            yield item
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)


def session_footprint(session: StreamingSession) -> tuple[int, int, int]:
    """(tensors, bytes of their distinct storages, frame entries) held by the session."""
    roots = [session.objects, session._features, session._frame, session._absent_for]
    tensors = list(_tensors(roots))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    entries = sum(
        len(getattr(obj, f.name))
        for obj in session.objects.values()
        for f in dataclasses.fields(obj)
        if isinstance(getattr(obj, f.name), (dict, set))
    )
    return len(tensors), sum(storages.values()), entries


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def small_frames() -> np.ndarray:
    frames = np.load(MICRO / "video_frames.npz")["frames_uint8"]  # (24, 180, 320, 3)
    size = (FRAME_SIZE, FRAME_SIZE)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~5 min on 2 idle cores; much longer on a busy machine
def test_session_memory_is_flat_over_5000_frames(micro_model):
    frames = small_frames()
    session = StreamingSession(micro_model, SessionOptions())
    session.add_frame(frames[0])
    session.add_points(None, np.array([[40.0, 30.0]]), np.array([1]))
    session.add_box(None, np.array([5.0, 20.0, 30.0, 60.0]))
    # A correction later on adds a second conditioning frame to object 1.
    checkpoints = {}
    for t in range(1, NUM_FRAMES + 1):
        result = session.add_frame(frames[t % len(frames)], pts=t)
        if t == 50:
            session.add_points(1, np.array([[20.0, 40.0]]), np.array([1]))
        if t in (WARM_UP_FRAME, NUM_FRAMES):
            del result
            gc.collect()
            checkpoints[t] = (session_footprint(session), rss_bytes())

    assert session.frame_idx == NUM_FRAMES
    assert session.obj_ids == [1, 2]
    assert sorted(session.objects[1].conditioning) == [0, 50]
    (early, early_rss), (late, late_rss) = checkpoints[WARM_UP_FRAME], checkpoints[NUM_FRAMES]
    assert late == early, f"session footprint (tensors, bytes, entries) {early} -> {late}"
    growth = late_rss - early_rss
    allowed = max(RSS_TOLERANCE_BYTES, RSS_TOLERANCE_FRACTION * early_rss)
    assert growth <= allowed, (
        f"RSS grew by {growth / 2**20:.1f} MiB (allowed {allowed / 2**20:.1f})"
    )
