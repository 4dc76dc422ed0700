"""The options a `track-many` video was tracked with, as the manifest records them.

A rerun compares each video's recorded options with the run's: a video done with other
options (another format, PNG layout, model, checkpoint, auto-seed setting, object or frame
limit, memory, detector, or an edited prompts file) is tracked again, and the run says which
option changed.
Rows written before options were recorded carry none; they are trusted as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from streamer.batch.track import TrackPlan
from streamer.batch.video_worker import TrackJob


def video_options(job: TrackJob, video: Path) -> dict[str, Any]:
    """JSON-ready options that shape `video`'s outputs in this run (the prompts file by the
    SHA-256 of its bytes; "missing" when it does not exist)."""
    plan = job.plan
    prompts: str | None = None
    if job.prompts_dir is not None:
        path = job.prompts_dir / f"{video.stem}.json"
        try:
            prompts = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            prompts = "missing"
    options = {
        "formats": list(plan.formats),
        "auto_seed": dataclasses.asdict(plan.seeding) if plan.seeding is not None else None,
        "max_objects": plan.max_objects,
        "max_frames": plan.max_frames,
        "outputs": dataclasses.asdict(plan.outputs),
        "memory": plan.memory,
        "detect": _detect_options(plan),
        "model": job.model,
        "checkpoint": str(job.checkpoint) if job.checkpoint is not None else None,
        "prompts_sha256": prompts,
    }
    return json.loads(json.dumps(options))  # the form a manifest row reads back


def _detect_options(plan: TrackPlan) -> dict[str, Any] | None:
    """The detector (its name, or a callable's qualified name) and its options."""
    if plan.detect is None:
        return None
    detector = plan.detect.detector
    name = detector if isinstance(detector, str) else getattr(detector, "__qualname__", "callable")
    return {"detector": name, "options": json.loads(plan.detect.options.model_dump_json())}


def changed_options(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the options whose values differ, e.g. ["formats", "outputs"]."""
    return sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
