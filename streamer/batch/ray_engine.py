"""The Ray Data engine of `track-many`: `map_batches` over an actor pool, one model per actor.

Ray decides where actors run (`num_gpus` / `num_cpus` per actor, `pool_size` actors), restarts
an actor that dies and retries its batch (`max_restarts`, `max_task_retries`), and streams the
results back to the driver, which writes the manifest as they arrive. Each batch is one video,
so a retry redoes one video and the pool balances long and short videos.

Needs the `ray` extra: `pip install 'sam2-stream[ray]'`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from streamer.batch.manifest import ManifestRow
from streamer.batch.video_worker import TrackJob, VideoWorker, WorkItem

logger = logging.getLogger(__name__)

_ROW_FIELDS = [f.name for f in fields(ManifestRow)]


class RayEngineError(RuntimeError):
    """Ray is not installed, the cluster cannot be reached, or the run failed past Ray's
    retries (an actor that cannot start, a worker that keeps dying)."""


class TrackActor:
    """The callable class of the actor pool: builds one `VideoWorker` when the actor starts,
    then tracks each batch's videos (one per batch) and returns their manifest rows."""

    def __init__(self, job: TrackJob, device: str) -> None:
        self.worker = VideoWorker(job, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [
            asdict(self.worker.process(WorkItem(video=str(video), output=str(output))))
            for video, output in zip(batch["video"], batch["output"], strict=True)
        ]
        return {name: np.array([row[name] for row in rows], dtype=object) for name in _ROW_FIELDS}


def run_ray(
    job: TrackJob,
    items: Sequence[WorkItem],
    *,
    address: str | None = None,
    pool_size: int = 1,
    num_gpus: float | None = None,
    num_cpus: float = 1.0,
    max_retries: int = 3,
) -> Iterator[ManifestRow]:
    """Track `items` on a Ray actor pool; yields manifest rows as videos end.

    address: the cluster to join ("auto", "ray://host:10001", ...); None: the one this
    process is connected to, else a new local one. pool_size: actors (one model each).
    num_gpus / num_cpus: resources per actor (num_gpus > 0 puts the model on the actor's
    GPU; None: 1 when the cluster has GPUs, else 0). max_retries: restarts of a dead actor and
    retries of its video. Raises RayEngineError at once when the cluster lacks the GPUs or CPUs
    one actor asks for (Ray would wait for them forever).
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayEngineError("the ray engine needs Ray: pip install 'sam2-stream[ray]'") from exc
    if not items:
        return
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayEngineError(f"cannot connect to the Ray cluster {address!r}: {exc}") from exc
    num_gpus = _check_resources(ray.cluster_resources(), num_gpus, num_cpus)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows videos and frames instead
    dataset = ray.data.from_items(
        [{"video": item.video, "output": item.output} for item in items],
        override_num_blocks=len(items),
    )
    with warnings.catch_warnings():
        # Ray 2.60 deprecates **ray_remote_args but names no replacement for the actor
        # retry options (max_restarts / max_task_retries) yet.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=Warning)
        results = dataset.map_batches(
            TrackActor,
            fn_constructor_kwargs={"job": job, "device": "cuda" if num_gpus > 0 else "cpu"},
            batch_size=1,
            batch_format="numpy",
            # One video in flight per actor: a free actor takes the next video, so long and
            # short videos balance over the pool.
            compute=ray.data.ActorPoolStrategy(size=pool_size, max_tasks_in_flight_per_actor=1),
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            max_restarts=max_retries,
            max_task_retries=max_retries,
        )
    try:
        for record in results.iter_rows():
            yield ManifestRow.from_dict(_plain(record))
    except ray.exceptions.RayError as exc:  # e.g. every actor failed to load its model
        raise RayEngineError(f"the Ray run failed: {exc}") from exc


def _check_resources(cluster: dict[str, float], num_gpus: float | None, num_cpus: float) -> float:
    """GPUs per actor for this cluster (`num_gpus`, or its default); raises RayEngineError when
    no node could ever hold one actor."""
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    if num_gpus is None:
        num_gpus = 1.0 if gpus >= 1 else 0.0
        logger.info("ray: %g GPU(s) per actor (the cluster has %g GPUs)", num_gpus, gpus)
    if num_gpus > gpus:
        raise RayEngineError(
            f"each actor asks for {num_gpus:g} GPU(s) but the Ray cluster has {gpus:g}: "
            "use --num-gpus 0 for CPU actors, or add GPU nodes"
        )
    if num_cpus > cpus:
        raise RayEngineError(
            f"each actor asks for {num_cpus:g} CPU(s) but the Ray cluster has {cpus:g}"
        )
    return num_gpus


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A row from Ray (numpy scalars, NaN-free objects) as plain Python values."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    for key in ("frames", "objects"):
        out[key] = int(out.get(key) or 0)
    out["seconds"] = float(out.get("seconds") or 0.0)
    return out
