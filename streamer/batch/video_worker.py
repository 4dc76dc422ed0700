"""What one `track-many` worker does: one model on one device, one video at a time.

Both engines (`streamer.batch.track_many`'s local threads and `streamer.batch.ray_engine`'s
actors) run `VideoWorker.process`. Outputs go to a temporary folder renamed into place when
complete, so a folder that exists is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamer.batch.manifest import ManifestRow
from streamer.batch.staging import PARTIAL_MARK
from streamer.batch.track import TrackPlan, load_track_model, track_with_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackJob:
    """What every worker needs to track any video of the run (picklable, sent to Ray actors).

    plan: checked tracking options. prompts_dir: `<prompts_dir>/<stem>.json` per video (None:
    auto-seeding). model/checkpoint/precision: the model every worker loads. threads: torch
    threads per worker (None: torch's default).
    """

    plan: TrackPlan
    prompts_dir: Path | None = None
    model: str = "sam2.1_hiera_t"
    checkpoint: Path | None = None
    threads: int | None = None
    precision: str = "auto"


@dataclass(frozen=True)
class WorkItem:
    """One video to track into `output` (its final folder)."""

    video: str
    output: str


class VideoWorker:
    """One model on one device; tracks one video at a time into its output folder.

    device: "cpu", "cuda", "cuda:N". name: recorded in the manifest's `worker` column.
    """

    def __init__(self, job: TrackJob, *, device: str, name: str | None = None) -> None:
        import torch

        if job.threads is not None:
            torch.set_num_threads(job.threads)
        self.job = job
        self.device = device
        self.name = name or f"{socket.gethostname()}:{os.getpid()} {device}"
        self.model = load_track_model(
            job.model, job.checkpoint, device=device, precision=job.precision
        )

    def process(
        self,
        item: WorkItem,
        on_frame: Callable[[int], None] | None = None,
        on_seed: Callable[[int, int], None] | None = None,
    ) -> ManifestRow:
        """Track one video; never raises for a bad video (the row says `failed` and why).
        on_frame / on_seed: as in `track_with_model`."""
        started = time.monotonic()
        final = Path(item.output)
        partial = final.with_name(f"{final.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}")
        try:
            prompts = None
            if self.job.prompts_dir is not None:
                prompts = self.job.prompts_dir / f"{Path(item.video).stem}.json"
            summary = track_with_model(
                self.model,
                Path(item.video),
                out_dir=partial,
                plan=self.job.plan,
                prompts=prompts,
                progress=False,
                on_frame=on_frame,
                on_seed=on_seed,
            )
            if final.exists():  # complete, but from a run the manifest does not know about
                shutil.rmtree(final)
            os.replace(partial, final)
        except Exception as exc:  # a failed video is recorded and the run goes on
            logger.warning(
                "%s failed: %s", item.video, exc, exc_info=logger.isEnabledFor(logging.DEBUG)
            )
            shutil.rmtree(partial, ignore_errors=True)
            return ManifestRow(
                video=item.video,
                output=item.output,
                status="failed",
                seconds=time.monotonic() - started,
                worker=self.name,
                error=f"{type(exc).__name__}: {exc}",
            )
        return ManifestRow(
            video=item.video,
            output=item.output,
            status="done",
            frames=summary.frames,
            objects=len(summary.obj_ids),
            seconds=time.monotonic() - started,
            worker=self.name,
        )
