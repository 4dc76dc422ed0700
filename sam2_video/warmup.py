"""Compile every graph a compiled model will need before it serves (`warm_up`).

A compiled part compiles on first use of each input shape: without a warm-up the first stream
with 5 objects, or the first step batching 3 streams, stalls every stream on the device for
the compile (seconds on a GPU, minutes on the CPU). `warm_up` drives the public tracking API
with synthetic frames over every shape a deployment can reach:

- every object-row bucket up to `max_objects * max_batch` rows (`StaticShapes.buckets_up_to`):
  a session with that many objects, prompted, then tracked for a few frames (memory encoder,
  memory attention, decoder at that batch); with `max_batch > 1` also the same rows split over
  two streams (rows gathered from several frames are other graphs);
- the prompt variants: a click, two clicks, a box, a mask, a correcting click on a tracked
  frame;
- every frame-batch bucket up to `max_batch` streams (`track_streams`: the image encoder).

It is bounded by `time_budget` seconds (checked between shapes) and returns a `WarmupReport`
that says what was compiled, how long it took and whether it finished; the report is kept on
the model's `CompiledParts` handle (the service shows it in /readyz).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sam2_video.compile import compiled_parts
from sam2_video.modeling.sam2 import SAM2Model
from sam2_video.predictors.multi_stream import track_streams
from sam2_video.predictors.streaming import SessionOptions, StreamingSession
from sam2_video.tracking.tracker import StaticShapes

logger = logging.getLogger(__name__)

# Frames tracked per shape: the first commits the prompts' memory, the next ones run the
# steady state (full static bank).
TRACKED_FRAMES = 3
_HW = (64, 96)  # synthetic frame size (frames are resized to the model's input anyway)


@dataclass
class WarmupReport:
    """What a warm-up compiled.

    shapes: the shapes run, e.g. "prompts", "objects=8", "objects=8 streams=2", "streams=4".
    skipped: shapes left out because `time_budget` ran out (then `complete` is False).
    fallbacks: parts that failed to compile (and run eagerly), with the error.
    """

    seconds: float = 0.0
    shapes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    fallbacks: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.skipped

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


def _frame(t: int) -> np.ndarray:
    """(H, W, 3) uint8: a few bright squares that move one pixel per frame."""
    image = np.full((*_HW, 3), 40, np.uint8)
    for k in range(3):
        x = 6 + 28 * k + t
        image[16:40, x : x + 20] = (200 - 50 * k, 80 + 60 * k, 120)
    return image


def _mask(k: int) -> np.ndarray:
    mask = np.zeros(_HW, bool)
    x = 6 + 28 * (k % 3)
    mask[16:40, x : x + 20] = True
    return mask


def _session(model: SAM2Model, objects: int, capacity: int = 1) -> StreamingSession:
    options = SessionOptions(static_shapes=True, max_objects=max(objects, capacity))
    session = StreamingSession(model, options)
    session.add_frame(_frame(0))
    for k in range(objects):
        session.add_mask(None, _mask(k))
    return session


def warm_up(
    model: SAM2Model,
    *,
    max_objects: int,
    max_batch: int = 1,
    time_budget: float = 900.0,
    static_shapes: StaticShapes | None = None,
) -> WarmupReport:
    """Run every shape a compiled `model` can meet serving up to `max_batch` streams of up to
    `max_objects` objects each (module docstring), within about `time_budget` seconds.

    static_shapes: the tracker's (default: what `SessionOptions(static_shapes=True)` uses).
    Works on an eager model too (it then only costs the time of the forwards).
    """
    static = static_shapes or StaticShapes(SessionOptions().max_conditioning_frames)
    started = time.monotonic()
    report = WarmupReport()
    plan: list[tuple[str, Any]] = [("prompts", None)]
    for rows in static.buckets_up_to(max_objects * max_batch):
        plan.append((f"objects={rows}", [rows]))
        if max_batch > 1 and rows > 1:
            # Rows from several frames take other graphs (features gathered per row, not one
            # frame's broadcast): the same bucket split over two streams.
            plan.append((f"objects={rows} streams=2", [rows // 2, rows - rows // 2]))
    plan += [
        (f"streams={streams}", [1] * streams)
        for streams in static.buckets_up_to(max_batch)
        if streams > 2
    ]
    for name, size in plan:
        if time.monotonic() - started > time_budget:
            report.skipped.append(name)
            continue
        if name == "prompts":
            session = _session(model, 0, capacity=4)
            session.add_points(None, np.array([[16.0, 28.0]]), np.array([1]))
            session.add_points(None, np.array([[44.0, 28.0], [50.0, 30.0]]), np.array([1, 0]))
            session.add_box(None, np.array([60.0, 14.0, 84.0, 42.0]))
            session.add_mask(None, _mask(0))
            for t in range(1, TRACKED_FRAMES + 1):
                session.add_frame(_frame(t))
            # A correction on a tracked frame (the decoder also takes the previous mask).
            session.add_points(session.obj_ids[0], np.array([[18.0, 30.0]]), np.array([1]))
            session.add_frame(_frame(TRACKED_FRAMES + 1))
        elif len(size) == 1:
            session = _session(model, size[0])
            for t in range(1, TRACKED_FRAMES + 1):
                session.add_frame(_frame(t))
        else:
            sessions = [_session(model, objects) for objects in size]
            for t in range(1, TRACKED_FRAMES + 1):
                track_streams(sessions, [_frame(t)] * len(sessions))
        report.shapes.append(name)
        logger.info("warm-up: %s done at %.1f s", name, time.monotonic() - started)
    report.seconds = time.monotonic() - started
    handle = compiled_parts(model)
    if handle is not None:
        report.fallbacks = handle.fallbacks()
        handle.warmup = report
    if report.skipped:
        logger.error(
            "warm-up stopped after %.0f s (budget %.0f s): %s not compiled; they will compile "
            "while serving",
            report.seconds,
            time_budget,
            ", ".join(report.skipped),
        )
    else:
        logger.info("warm-up: %d shapes in %.1f s", len(report.shapes), report.seconds)
    return report
