"""The `track` command: segment and track objects through a video file, every frame in order.

Frames are decoded on a `FileSource` thread (every frame, no drops) and fed one by one to a
`StreamingSession`. Objects come from a prompts file (applied when their frame is reached, see
docs/prompts_format.md) or from auto-seeding on the first frame. Each frame's result goes to the
writers of the chosen formats (`streamer.batch.outputs`), so memory stays flat on long videos.
Input problems are found before the model is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from tqdm import tqdm

from sam2_video import SAM2Model, SessionOptions, StreamingSession
from sam2_video.build import build_sam2, check_model, ensure_model_checkpoint
from sam2_video.predictors.auto_seed import AutoSeedOptions
from sam2_video.predictors.stream_types import FrameSizeError, TooManyObjectsError
from sam2_video.tracking.dam4sam import check_memory_kind
from streamer.batch.detecting import BatchDetect, FrameDetector
from streamer.batch.outputs import (
    MaskWriter,
    OutputOptions,
    VideoInfo,
    make_writers,
    parse_formats,
)
from streamer.batch.outputs.png import MAX_INDEXED_ID, PNG_LAYOUTS
from streamer.batch.prompts_file import Prompt, PromptsFileError, load_prompts
from streamer.batch.seed_progress import track_frame
from streamer.batch.segment import resolve_device
from streamer.batch.staging import final_path, named_error, publish, staging_folder
from streamer.ingest.base import SourceState
from streamer.ingest.file import FileSource
from streamer.ingest.limits import FrameLimits
from streamer.ingest.slot import VideoFrame

logger = logging.getLogger(__name__)

# Offline tracking of the user's own files: 8K and panoramas pass (the service is stricter).
BATCH_FRAME_LIMITS = FrameLimits(max_pixels=8192 * 8192, max_side=16384)


class VideoInputError(ValueError):
    """The input video is missing, unreadable or corrupt."""


class TrackOptionError(ValueError):
    """An option the command cannot use: unknown format, bad auto-seed setting, ..."""


# --- video ----------------------------------------------------------------------------------


def probe_video(path: Path) -> VideoInfo:
    """Open `path` and decode its first frame: size, frame rate, announced frame count.

    Raises VideoInputError for a missing file, no video stream, or undecodable data.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoInputError(f"{path} has no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            fps = stream.average_rate or stream.guessed_rate or Fraction(30)
            frame_count = stream.frames or None
    except av.error.FFmpegError as exc:
        raise VideoInputError(f"cannot read video {path}: {exc}") from exc
    if first is None:
        raise VideoInputError(f"{path} holds no decodable frames")
    return VideoInfo(
        name=path.stem,
        width=first.width,
        height=first.height,
        fps=Fraction(fps),
        frame_count=frame_count,
    )


# --- tracking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackSummary:
    """What `track_video` did: frames processed, objects tracked, paths written, seconds."""

    frames: int
    obj_ids: list[int]
    outputs: list[Path]
    seconds: float
    unused_prompts: int = 0


@dataclass(frozen=True)
class TrackPlan:
    """Checked options of a tracking run, shared by every video of a `track-many` run.

    formats: output format names; seeding: auto-seed options (None: prompts only);
    detect: detector seeding (None: none); max_objects: objects tracked at most;
    max_frames: stop after this many frames (None: all);
    outputs: how the writers lay out their files (PNG layout, frames as JPEGs).
    memory: "sam2" or "dam4sam" (distractor-aware memory, `SessionOptions.memory`).
    """

    formats: list[str]
    seeding: AutoSeedOptions | None
    max_objects: int = 64
    max_frames: int | None = None
    outputs: OutputOptions = OutputOptions()
    detect: BatchDetect | None = None  # detector seeding (`--detector`)
    memory: str = "sam2"


def plan_track(
    *,
    formats: Sequence[str] | None = None,
    has_prompts: bool = False,
    auto_seed: bool = False,
    seed_options: Mapping[str, Any] | None = None,
    max_objects: int = 64,
    max_frames: int | None = None,
    outputs: OutputOptions | None = None,
    detect: BatchDetect | None = None,
    memory: str = "sam2",
) -> TrackPlan:
    """Check the options of a run (before any video or model is touched); raises
    TrackOptionError saying what is wrong."""
    outputs = outputs or OutputOptions()
    try:
        chosen = parse_formats(list(formats) if formats else None)
        if not has_prompts and not auto_seed and detect is None:
            raise ValueError(
                "nothing to track: give a prompts file, a detector or ask for auto-seeding"
            )
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        seeding = AutoSeedOptions(**(seed_options or {})) if auto_seed else None
        check_memory_kind(memory)
        if outputs.png_layout not in PNG_LAYOUTS:
            raise ValueError(f"png layout must be one of {', '.join(PNG_LAYOUTS)}")
    except (TypeError, ValueError) as exc:  # TypeError: an unknown auto-seed option
        raise TrackOptionError(str(exc)) from exc
    return TrackPlan(
        chosen, seeding, max_objects, max_frames, outputs=outputs, detect=detect, memory=memory
    )


def load_track_model(
    model: str = "sam2.1_hiera_t",
    checkpoint: Path | None = None,
    download: bool = False,
    device: str | None = None,
    precision: str = "auto",
) -> SAM2Model:
    """Build the model a tracking worker uses (blocking). Raises DeviceUnavailableError,
    ConfigError and the checkpoint errors of `ensure_checkpoint` / `build_sam2`."""
    check_model(model)
    torch_device = resolve_device(device)
    checkpoint_path = ensure_model_checkpoint(model, checkpoint, download)
    return build_sam2(model, checkpoint=checkpoint_path, device=torch_device, precision=precision)


def track_video(
    video: Path,
    *,
    out_dir: Path,
    formats: Sequence[str] | None = None,
    prompts: Path | None = None,
    auto_seed: bool = False,
    seed_options: Mapping[str, Any] | None = None,
    max_objects: int = 64,
    model: str = "sam2.1_hiera_t",
    checkpoint: Path | None = None,
    download: bool = False,
    device: str | None = None,
    precision: str = "auto",
    max_frames: int | None = None,
    progress: bool = True,
    outputs: OutputOptions | None = None,
    detect: BatchDetect | None = None,
    memory: str = "sam2",
) -> TrackSummary:
    """Track objects through every frame of `video` and write the chosen formats to `out_dir`.

    formats: names or comma lists from `streamer.batch.outputs.FORMATS` (default: coco).
    prompts: a prompts file (docs/prompts_format.md); auto_seed: seed objects on frame 0 with
        the automatic mask generator, `seed_options` being `AutoSeedOptions` fields.
    max_objects: objects tracked at most. max_frames: stop after this many frames.
    outputs: PNG layout, frames as JPEGs (`OutputOptions`).
    detect: seed (and label) objects with a detector (`BatchDetect`).
    precision: auto | fp32 | bf16 | fp16 (`sam2_video.precision`).
    Raises ValueError subclasses for bad input (VideoInputError, PromptsFileError,
    DeviceUnavailableError, ConfigError, TrackOptionError), checkpoint errors
    from `ensure_checkpoint` / `build_sam2`, and OSError when an output cannot be written.
    """
    started = time.monotonic()
    plan = plan_track(
        formats=formats,
        has_prompts=prompts is not None,
        auto_seed=auto_seed,
        seed_options=seed_options,
        max_objects=max_objects,
        max_frames=max_frames,
        outputs=outputs,
        detect=detect,
        memory=memory,
    )
    info = probe_video(video)  # input problems are found before the model is loaded
    if prompts is not None:
        _check_png_ids(plan, load_prompts(prompts, width=info.width, height=info.height))
    sam = load_track_model(model, checkpoint, download, device, precision)
    summary = track_with_model(
        sam, video, out_dir=out_dir, plan=plan, prompts=prompts, progress=progress
    )
    return dataclasses.replace(summary, seconds=time.monotonic() - started)


def track_with_model(
    sam: SAM2Model,
    video: Path,
    *,
    out_dir: Path,
    plan: TrackPlan,
    prompts: Path | None = None,
    progress: bool = True,
    on_frame: Callable[[int], None] | None = None,
    on_seed: Callable[[int, int], None] | None = None,
) -> TrackSummary:
    """Track `video` with an already loaded model (a `track-many` worker holds one for many
    videos). on_frame(frame_idx) is called after each frame is written, on_seed(done, total)
    after each slice of a first-frame auto-seeding. Raises like `track_video`, less the
    model-loading errors. Outputs appear under their final names only once complete
    (`streamer.batch.staging`); write errors name the output."""
    started = time.monotonic()
    info = probe_video(video)
    pending = load_prompts(prompts, width=info.width, height=info.height) if prompts else []
    _check_png_ids(plan, pending)
    options = SessionOptions(
        max_objects=plan.max_objects, lost_after=None, auto_seed=plan.seeding, memory=plan.memory
    )
    logger.info("%s: %dx%d at %s fps on %s", video, info.width, info.height, info.fps, sam.device)
    session = StreamingSession(sam, options)
    by_frame: dict[int, list[Prompt]] = defaultdict(list)
    for prompt in pending:
        by_frame[prompt.frame].append(prompt)
    detection = FrameDetector(plan.detect, str(sam.device)) if plan.detect else None
    with staging_folder(out_dir, info.name) as staging:
        writers: list[MaskWriter] = []
        outputs: list[Path] = []
        try:
            writers.extend(make_writers(plan.formats, staging, info, plan.outputs))
            if detection is not None:
                for writer in writers:
                    writer.labels = detection.labels
            frames = _run(
                session,
                video,
                info,
                by_frame,
                writers,
                plan.max_frames,
                progress,
                on_frame,
                on_seed,
                detection,
            )
        except BaseException:
            for writer in writers:  # free files and encoders; the partial folder goes
                with contextlib.suppress(Exception):
                    writer.close()
            raise
        for writer in writers:
            try:
                outputs.extend(writer.close())
            except OSError as exc:
                raise named_error(exc, final_path(_target(writer), staging, out_dir)) from exc
        outputs = publish(outputs, staging, out_dir)
    unused = sum(len(p) for f, p in by_frame.items() if f >= frames)
    if unused:
        logger.warning(
            "%d prompt(s) for frames past the last one processed (%d) were not used",
            unused,
            frames - 1,
        )
    return TrackSummary(frames, session.obj_ids, outputs, time.monotonic() - started, unused)


def _check_png_ids(plan: TrackPlan, prompts: Sequence[Prompt]) -> None:
    """Indexed PNGs store the object id in a byte: refuse larger ids before tracking."""
    if "png" not in plan.formats or plan.outputs.png_layout != "indexed":
        return
    ids = sorted({p.obj_id for p in prompts if p.obj_id is not None and p.obj_id > MAX_INDEXED_ID})
    if ids:
        raise TrackOptionError(
            f"object ids {ids} do not fit indexed PNGs (ids 1..{MAX_INDEXED_ID}, the pixel "
            "value); use --png-layout per-object"
        )


def _run(
    session: StreamingSession,
    video: Path,
    info: VideoInfo,
    by_frame: Mapping[int, list[Prompt]],
    writers: Sequence[MaskWriter],
    max_frames: int | None,
    progress: bool,
    on_frame: Callable[[int], None] | None = None,
    on_seed: Callable[[int, int], None] | None = None,
    detection: FrameDetector | None = None,
) -> int:
    """The frame loop: decode thread -> session -> writers. Returns frames processed."""
    expected = info.frame_count
    if max_frames is not None:
        expected = min(expected, max_frames) if expected else max_frames
    source = FileSource(video, max_frames=max_frames, frame_limits=BATCH_FRAME_LIMITS)
    bar = tqdm(
        total=expected,
        unit="frame",
        desc=info.name,
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    source.start()
    frames = 0
    try:
        # Without a timeout `get` waits: a frame, or END_OF_STREAM once the source has ended.
        while isinstance(frame := source.slot.get(), VideoFrame):
            try:
                result = track_frame(
                    session,
                    frame.image,
                    frame.pts,
                    name=info.name,
                    progress=progress,
                    on_step=on_seed,
                )
            except FrameSizeError as exc:
                raise VideoInputError(f"{video}, frame {frame.index}: {exc}") from exc
            edited = [_apply(session, p) for p in by_frame.get(result.frame_idx, ())]
            if edited:
                result = session.current_result()
            if detection is not None:
                result = detection.apply(session, frame.image) or result
            for writer in writers:
                try:
                    writer.write(frame, result, edited=edited)
                except OSError as exc:
                    raise named_error(exc, _target(writer)) from exc
            frames += 1
            bar.set_postfix(objects=len(result.obj_ids), refresh=False)
            bar.update(1)
            if on_frame is not None:
                on_frame(result.frame_idx)
    finally:
        source.stop()
        bar.close()
    if source.state is SourceState.FAILED:
        raise VideoInputError(source.error or f"cannot decode {video}")
    return frames


def _target(writer: MaskWriter) -> Path:
    """The file or folder a writer writes (for error messages)."""
    return Path(getattr(writer, "path", None) or getattr(writer, "folder", None) or writer.out_dir)


def _apply(session: StreamingSession, prompt: Prompt) -> int:
    """Give one prompt to the session (current frame); returns the object id it acted on."""
    try:
        if prompt.mask is not None:
            result = session.add_mask(prompt.obj_id, prompt.mask)
        else:
            result = session.add_points(prompt.obj_id, prompt.points, prompt.labels, box=prompt.box)
    except (TooManyObjectsError, ValueError) as exc:
        raise PromptsFileError(f"prompt {prompt.number} (frame {prompt.frame}): {exc}") from exc
    return prompt.obj_id if prompt.obj_id is not None else result.obj_ids[-1]
