"""One frame of `track`, with a progress bar while the first frame is auto-seeded.

Seeding runs the automatic mask generator over the frame (an image embedding, then point
batches): tens of seconds on a CPU, during which the frame bar would sit at "0 frames". The
frame is tracked with seeding deferred (`track_streams(..., seed=False)`, as the service's
scheduler does), then the seeding slices run one by one under their own bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from sam2_video import FrameResult, StreamingSession
from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from sam2_video.predictors.multi_stream import track_streams


def track_frame(
    session: StreamingSession,
    image: np.ndarray,
    pts: int | None,
    *,
    name: str,
    progress: bool,
    on_step: Callable[[int, int], None] | None = None,
) -> FrameResult:
    """`session.add_frame(image, pts)`; a seeding frame shows a "seeding" bar (stderr) when
    `progress`, and calls on_step(done, total) after each seeding slice (track-many shows it
    on its own bar). image: (H, W, 3) uint8 RGB. Raises like `add_frame`."""
    seeding = session.options.auto_seed
    if seeding is None:
        return session.add_frame(image, pts=pts)
    [result] = track_streams([session], [image], [pts], seed=False)
    if isinstance(result, ValueError):
        raise result
    if not session.seeding_due:
        return result
    generator = SAM2AutomaticMaskGenerator(session.model, **seeding.generator_kwargs())
    total = generator.num_steps(image.shape[:2])
    steps = session.auto_seed_steps(lost=result.lost)
    desc = f"{name}: seeding frame {result.frame_idx}"
    with tqdm(
        total=total, unit="batch", desc=desc, file=sys.stderr, disable=not progress, leave=False
    ) as bar:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            bar.update()
            if on_step is not None:
                on_step(bar.n, total)
