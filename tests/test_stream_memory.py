"""A long live stream runs at constant memory.

Memory that grows with the number of frames shows up as growth *per frame*, so instead of
running thousands of frames and watching RSS (minutes of CPU), the test runs the stream past
its retention window and then checks, at several points, exact counts that would move with
any per-frame leak:
* the session holds exactly the same tensors, bytes and frame entries;
* the process holds exactly the same number of live tensors (a leak outside the session, e.g.
  a cache, counts too);
* the number of Python objects the garbage collector tracks grows by less than one per 10
  frames (caches that settle, not one per frame);
* and the RSS stays within allocator noise.
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

from sam2_video import SessionOptions, StreamingSession

MICRO = Path(__file__).parent / "fixtures" / "reference" / "micro"

NUM_FRAMES = 600
WARM_UP_FRAME = 150  # past the retention window (7 memory frames, 16 pointers)
CHECK_EVERY = 150
# Growth of gc-tracked Python objects allowed between the first and the last check: caches
# may settle a little, a leak of one container per frame would be 450.
PY_OBJECTS_TOLERANCE = 45
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
    roots = [session.objects, session._features, session._frame, session._objects._absent_for]
    tensors = list(_tensors(roots))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    entries = sum(
        len(getattr(obj, f.name))
        for obj in session.objects.values()
        for f in dataclasses.fields(obj)
        if isinstance(getattr(obj, f.name), (dict, set))
    )
    return len(tensors), sum(storages.values()), entries


def live_objects() -> tuple[int, int]:
    """(live tensors, gc-tracked Python objects) in the process, after a collection."""
    gc.collect()
    objects = gc.get_objects()
    return sum(1 for obj in objects if isinstance(obj, Tensor)), len(objects)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def small_frames() -> np.ndarray:
    frames = np.load(MICRO / "video_frames.npz")["frames_uint8"]  # (24, 180, 320, 3)
    size = (FRAME_SIZE, FRAME_SIZE)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


@pytest.mark.timeout(900)
def test_session_memory_is_flat_past_its_retention_window(micro_model):
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
        if t >= WARM_UP_FRAME and t % CHECK_EVERY == 0:
            del result
            tensors, objects = live_objects()  # collects garbage first
            checkpoints[t] = (session_footprint(session), tensors, objects, rss_bytes())

    assert session.frame_idx == NUM_FRAMES
    assert session.obj_ids == [1, 2]
    assert sorted(session.objects[1].conditioning) == [0, 50]
    first, *_, last = sorted(checkpoints)
    footprints = {t: c[0] for t, c in checkpoints.items()}
    assert len(set(footprints.values())) == 1, f"session (tensors, bytes, entries): {footprints}"
    counts = {t: c[1] for t, c in checkpoints.items()}
    assert len(set(counts.values())) == 1, f"live tensors in the process: {counts}"
    object_growth = checkpoints[last][2] - checkpoints[first][2]
    assert object_growth <= PY_OBJECTS_TOLERANCE, f"{object_growth} more Python objects"
    early_rss, late_rss = checkpoints[first][3], checkpoints[last][3]
    growth = late_rss - early_rss
    allowed = max(RSS_TOLERANCE_BYTES, RSS_TOLERANCE_FRACTION * early_rss)
    assert growth <= allowed, (
        f"RSS grew by {growth / 2**20:.1f} MiB (allowed {allowed / 2**20:.1f})"
    )
