"""`track-many`: track many videos, one output folder each, on this machine or a Ray cluster.

What one worker does with one video lives in `streamer.batch.video_worker`; the engine
decides where workers run:

- `local`: one worker thread per device of this machine (every CUDA device, else one CPU
  worker), each holding one model, pulling videos from a shared queue;
- `ray`: Ray Data `map_batches` over an actor pool (`streamer.batch.ray_engine`).

Every video goes to `<out>/<name>/` with the same files `track --out <out>/<name>` writes. They
are written to a temporary folder first and renamed into place when complete, so a folder
that exists is complete. The driver appends one manifest row per video as results arrive
(`streamer.batch.manifest`); a rerun skips videos done and complete, and redoes the rest
(partial temporary folders are removed first). A video that fails (corrupt, unreadable, a bad
prompts file) is recorded as failed and the others go on.

Workers read videos from paths that all of them can see: on a cluster, a shared filesystem
mounted at the same path everywhere (paths are made absolute on the driver).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import queue
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from streamer.batch.manifest import Manifest, ManifestRow, is_complete
from streamer.batch.video_worker import PARTIAL_MARK, TrackJob, VideoWorker, WorkItem

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
MANIFEST_NAME = "manifest.jsonl"

Engine = Literal["local", "ray"]


class TrackManyInputError(ValueError):
    """The inputs name no video, a list file is unreadable, or output names collide."""


# --- inputs ---------------------------------------------------------------------------------


def collect_videos(inputs: Sequence[str], list_files: Sequence[Path] = ()) -> list[Path]:
    """Videos named by `inputs` (files, folders: their video files, or glob patterns) and by
    `list_files` (one path per line; blank lines and `#` comments skipped; relative paths are
    relative to the list file). Absolute, in order, duplicates removed.
    Raises TrackManyInputError when nothing is found or a list file cannot be read."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif glob.has_magic(item):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            found.append(path)  # a missing file is reported as a failed video, not here
    for list_file in list_files:
        try:
            lines = Path(list_file).read_text().splitlines()
        except OSError as exc:
            raise TrackManyInputError(f"cannot read list file {list_file}: {exc}") from exc
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line)
                found.append(path if path.is_absolute() else Path(list_file).parent / path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise TrackManyInputError("no video found in the inputs")
    return unique


def output_names(videos: Sequence[Path]) -> dict[Path, str]:
    """Output folder name of each video: its stem, or `<stem>-<hash of its path>` when two
    videos share a stem (stable across runs for the same path)."""
    stems: dict[str, int] = {}
    for video in videos:
        stems[video.stem] = stems.get(video.stem, 0) + 1
    return {
        v: v.stem
        if stems[v.stem] == 1
        else f"{v.stem}-{hashlib.sha1(str(v).encode()).hexdigest()[:8]}"
        for v in videos
    }


# --- local engine ---------------------------------------------------------------------------


def local_devices(device: str | None = None) -> list[str]:
    """Devices of this machine, one worker each: every CUDA device, else ["cpu"].
    device: "cpu" forces one CPU worker; "cuda" requires CUDA."""
    import torch

    if device == "cpu":
        return ["cpu"]
    count = torch.cuda.device_count()
    if count:
        return [f"cuda:{i}" for i in range(count)]
    if device is not None and device.startswith("cuda"):
        from streamer.batch.segment import DeviceUnavailableError

        raise DeviceUnavailableError("--device cuda was requested but CUDA is not available")
    return ["cpu"]


def run_local(
    job: TrackJob,
    items: Sequence[WorkItem],
    *,
    devices: Sequence[str],
    on_frame: Callable[[int], None] | None = None,
) -> Iterator[ManifestRow]:
    """Track `items` on one worker thread per device; yields rows as videos end.
    A worker whose model fails to load ends the run (the error is raised here)."""
    todo: queue.Queue[WorkItem | None] = queue.Queue()
    for item in items:
        todo.put(item)
    results: queue.Queue[ManifestRow | BaseException | None] = queue.Queue()

    def work(device: str) -> None:
        try:
            worker = VideoWorker(job, device=device)
            while (item := _next(todo)) is not None:
                results.put(worker.process(item, on_frame))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the driver thread
            results.put(exc)
        finally:
            results.put(None)  # this worker's end marker

    threads = [
        threading.Thread(target=work, args=(d,), name=f"track-many-{d}", daemon=True)
        for d in devices
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            result = results.get()
            if result is None:
                running -= 1
            elif isinstance(result, BaseException):
                raise result
            else:
                yield result
    finally:
        while _next(todo) is not None:  # stop the other workers after their current video
            pass
        for thread in threads:
            thread.join()


def _next(todo: queue.Queue[WorkItem | None]) -> WorkItem | None:
    try:
        return todo.get_nowait()
    except queue.Empty:
        return None


# --- the run --------------------------------------------------------------------------------


@dataclass
class RunReport:
    """What a `track-many` run did: rows written this run, videos skipped as complete."""

    rows: list[ManifestRow] = field(default_factory=list)
    skipped: int = 0

    @property
    def failed(self) -> list[ManifestRow]:
        """The rows of videos that failed."""
        return [r for r in self.rows if r.status == "failed"]


def plan_items(videos: Sequence[Path], out: Path, manifest: Manifest) -> tuple[list[WorkItem], int]:
    """The videos still to do (not done-and-complete in the manifest), and how many are
    skipped; removes partial folders left by an interrupted run."""
    for leftover in out.glob(f"*{PARTIAL_MARK}*"):
        if leftover.is_dir():
            logger.info("removing partial output %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    previous = manifest.read()
    names = output_names(videos)
    items, skipped = [], 0
    for video in videos:
        if is_complete(previous.get(str(video))):
            skipped += 1
        else:
            items.append(WorkItem(video=str(video), output=str(out / names[video])))
    return items, skipped


def run_track_many(
    videos: Sequence[Path],
    *,
    out: Path,
    job: TrackJob,
    engine: Engine = "local",
    device: str | None = None,
    manifest_path: Path | None = None,
    progress: bool = True,
    ray_options: dict[str, Any] | None = None,
) -> RunReport:
    """Track every video not already done into `out/<name>/`; returns the run's report.

    engine "local": one worker per device of this machine (`local_devices(device)`);
    engine "ray": `streamer.batch.ray_engine.run_ray(**ray_options)` on the connected (or a
    new local) Ray cluster. manifest_path: default `out/manifest.jsonl`.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(manifest_path or out / MANIFEST_NAME)
    items, skipped = plan_items(videos, out, manifest)
    report = RunReport(skipped=skipped)
    logger.info("%d videos to track, %d already done", len(items), skipped)
    videos_bar = tqdm(
        total=len(items), unit="video", desc="videos", file=sys.stderr, disable=not progress
    )
    frames_bar = tqdm(unit="frame", desc="frames", file=sys.stderr, disable=not progress)
    rows: Iterable[ManifestRow]
    try:
        if engine == "local":
            rows = run_local(
                job, items, devices=local_devices(device), on_frame=lambda _: frames_bar.update(1)
            )
        elif engine == "ray":
            from streamer.batch.ray_engine import run_ray

            rows = run_ray(job, items, **(ray_options or {}))
        else:
            raise ValueError(f"unknown engine {engine!r}")
        for row in rows:
            manifest.append(row)
            report.rows.append(row)
            videos_bar.update(1)
            if engine == "ray":  # actors cannot reach this bar: count frames per video
                frames_bar.update(row.frames)
            videos_bar.set_postfix(failed=len(report.failed), refresh=False)
    finally:
        videos_bar.close()
        frames_bar.close()
    return report
