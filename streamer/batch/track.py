"""The `track` command: segment and track objects through a video file, every frame in order.

Frames are decoded on a `FileSource` thread (every frame, no drops) and fed one by one to a
`StreamingSession`. Objects come from a prompts file (applied when their frame is reached, see
docs/prompts_format.md) or from auto-seeding on the first frame. Each frame's result goes to the
writers of the chosen formats (`streamer.batch.outputs`), so memory stays flat on long videos.
Input problems are found before the model is loaded.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator
from tqdm import tqdm

from sam2_video.auto_seed import AutoSeedOptions
from sam2_video.build import build_sam2
from sam2_video.checkpoints import ensure_checkpoint
from sam2_video.config import load_config
from sam2_video.streaming import (
    FrameSizeError,
    SessionOptions,
    StreamingSession,
    TooManyObjectsError,
)
from streamer.batch.outputs import MaskWriter, VideoInfo, make_writer, parse_formats
from streamer.batch.segment import resolve_device
from streamer.ingest.base import END_OF_STREAM, SourceState
from streamer.ingest.file import FileSource
from streamer.protocol import CocoRle
from streamer.results import decode_rle

logger = logging.getLogger(__name__)


class VideoInputError(ValueError):
    """The input video is missing, unreadable or corrupt."""


class PromptsFileError(ValueError):
    """The prompts file is missing, not JSON, malformed, or does not fit the video."""


class TrackOptionError(ValueError):
    """An option the command cannot use: unknown format, bad auto-seed setting, ..."""


# --- prompts file -------------------------------------------------------------------------


class _PromptEntry(BaseModel):
    """One entry of a prompts file, as written (see docs/prompts_format.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame: StrictInt = Field(ge=0)
    obj_id: StrictInt | None = Field(default=None, ge=0)
    points: list[tuple[float, float]] | None = Field(default=None, min_length=1)
    labels: list[Literal[0, 1]] | None = None
    box: tuple[float, float, float, float] | None = None
    mask_rle: CocoRle | None = None

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> _PromptEntry:
        if self.mask_rle is not None:
            if self.points is not None or self.box is not None:
                raise ValueError("mask_rle cannot be combined with points or box")
        elif self.points is None and self.box is None:
            raise ValueError("needs points (with labels), a box, or mask_rle")
        if (self.points is None) != (self.labels is None):
            raise ValueError("points and labels go together")
        if self.points is not None and len(self.points) != len(self.labels):
            raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels")
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise ValueError(f"box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1: {self.box}")
        return self


class _PromptsDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[_PromptEntry]


@dataclass(frozen=True)
class Prompt:
    """A prompt checked against the video, ready for the session.

    number: position in the file (0-based), for messages. frame: frame index it applies to.
    obj_id: the object (None: a new one). points: (P, 2) float32 (x, y) pixels; labels: (P,)
    int32 1 positive / 0 negative; box: (4,) float32 xyxy pixels; mask: (H, W) bool.
    """

    number: int
    frame: int
    obj_id: int | None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


def load_prompts(path: Path, *, width: int, height: int) -> list[Prompt]:
    """Read and check a prompts file for a `width` x `height` video; sorted by frame.

    Raises PromptsFileError saying which entry is wrong and why.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PromptsFileError(f"cannot read prompts file {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PromptsFileError(f"prompts file {path} is not valid JSON: {exc}") from exc
    if isinstance(data, list):
        data = {"prompts": data}
    try:
        document = _PromptsDocument.model_validate(data)
    except ValidationError as exc:
        raise PromptsFileError(f"prompts file {path}: {_describe(exc)}") from exc
    prompts = [
        _checked(number, entry, path, width, height)
        for number, entry in enumerate(document.prompts)
    ]
    return sorted(prompts, key=lambda p: p.frame)  # stable: file order within a frame


def _describe(exc: ValidationError) -> str:
    """First validation error as 'prompt 3: labels.0: Input should be 0 or 1'."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "prompts" and isinstance(loc[1], int):
        where = f"prompt {loc[1]}: "
        loc = loc[2:]
    field = ".".join(str(part) for part in loc)
    message = error["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
    return f"{where}{field + ': ' if field else ''}{message}{more}"


def _checked(number: int, entry: _PromptEntry, path: Path, width: int, height: int) -> Prompt:
    def fail(message: str) -> PromptsFileError:
        return PromptsFileError(f"prompts file {path}: prompt {number}: {message}")

    if entry.mask_rle is not None:
        if tuple(entry.mask_rle.size) != (height, width):
            raise fail(
                f"mask_rle size {list(entry.mask_rle.size)} is not the video's [{height}, {width}]"
            )
        try:
            mask = decode_rle(entry.mask_rle)
        except ValueError as exc:
            raise fail(f"mask_rle: {exc}") from exc
        if not mask.any():
            raise fail("mask_rle is empty")
        return Prompt(number, entry.frame, entry.obj_id, mask=mask)
    corners = list(entry.points or []) + ([entry.box[:2], entry.box[2:]] if entry.box else [])
    for x, y in corners:
        if not (0 <= x <= width and 0 <= y <= height):
            raise fail(f"({x}, {y}) lies outside the {width}x{height} frame")
    return Prompt(
        number,
        entry.frame,
        entry.obj_id,
        points=None if entry.points is None else np.asarray(entry.points, np.float32),
        labels=None if entry.labels is None else np.asarray(entry.labels, np.int32),
        box=None if entry.box is None else np.asarray(entry.box, np.float32),
    )


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
    max_frames: int | None = None,
    progress: bool = True,
) -> TrackSummary:
    """Track objects through every frame of `video` and write the chosen formats to `out_dir`.

    formats: names or comma lists from `streamer.batch.outputs.FORMATS` (default: coco).
    prompts: a prompts file (docs/prompts_format.md); auto_seed: seed objects on frame 0 with
        the automatic mask generator, `seed_options` being `AutoSeedOptions` fields.
    max_objects: objects tracked at most. max_frames: stop after this many frames.
    Raises ValueError subclasses for bad input (VideoInputError, PromptsFileError,
    DeviceUnavailableError, ConfigError, TrackOptionError), checkpoint errors
    from `ensure_checkpoint` / `build_sam2`, and OSError when an output cannot be written.
    """
    started = time.monotonic()
    try:
        chosen = parse_formats(list(formats) if formats else None)
        if prompts is None and not auto_seed:
            raise ValueError("nothing to track: give a prompts file or ask for auto-seeding")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        seeding = AutoSeedOptions(**(seed_options or {})) if auto_seed else None
    except (TypeError, ValueError) as exc:  # TypeError: an unknown auto-seed option
        raise TrackOptionError(str(exc)) from exc
    info = probe_video(video)
    pending = load_prompts(prompts, width=info.width, height=info.height) if prompts else []
    options = SessionOptions(max_objects=max_objects, lost_after=None, auto_seed=seeding)
    config = load_config(model)
    torch_device = resolve_device(device)
    checkpoint_path = ensure_checkpoint(config.name, checkpoint, download)
    sam = build_sam2(model, checkpoint=checkpoint_path, device=torch_device)
    logger.info(
        "%s: %dx%d at %s fps, model %s on %s",
        video,
        info.width,
        info.height,
        info.fps,
        config.name,
        torch_device,
    )

    session = StreamingSession(sam, options)
    by_frame: dict[int, list[Prompt]] = defaultdict(list)
    for prompt in pending:
        by_frame[prompt.frame].append(prompt)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = []
    outputs: list[Path] = []
    try:
        for fmt in chosen:
            writers.append(make_writer(fmt, out_dir, info))
        frames = _run(session, video, info, by_frame, writers, max_frames, progress)
    finally:
        for writer in writers:
            outputs.extend(writer.close())
    unused = sum(len(p) for f, p in by_frame.items() if f >= frames)
    if unused:
        logger.warning(
            "%d prompt(s) for frames past the last one processed (%d) were not used",
            unused,
            frames - 1,
        )
    return TrackSummary(frames, session.obj_ids, outputs, time.monotonic() - started, unused)


def _run(
    session: StreamingSession,
    video: Path,
    info: VideoInfo,
    by_frame: Mapping[int, list[Prompt]],
    writers: Sequence[MaskWriter],
    max_frames: int | None,
    progress: bool,
) -> int:
    """The frame loop: decode thread -> session -> writers. Returns frames processed."""
    expected = info.frame_count
    if max_frames is not None:
        expected = min(expected, max_frames) if expected else max_frames
    source = FileSource(video, max_frames=max_frames)
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
        while (frame := source.slot.get()) is not END_OF_STREAM:
            try:
                result = session.add_frame(frame.image, pts=frame.pts)
            except FrameSizeError as exc:
                raise VideoInputError(f"{video}, frame {frame.index}: {exc}") from exc
            edited = [_apply(session, p) for p in by_frame.get(result.frame_idx, ())]
            if edited:
                result = session.current_result()
            for writer in writers:
                writer.write(frame, result, edited=edited)
            frames += 1
            bar.set_postfix(objects=len(result.obj_ids), refresh=False)
            bar.update(1)
    finally:
        source.stop()
        bar.close()
    if source.state is SourceState.FAILED:
        raise VideoInputError(source.error or f"cannot decode {video}")
    return frames


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
