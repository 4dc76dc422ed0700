"""Prompts files of `track` / `track-many` (docs/prompts_format.md): read, validate, and check
against the video's size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from streamer.protocol import CocoRle
from streamer.results import decode_rle

__all__ = ["Prompt", "PromptsFileError", "load_prompts"]


class PromptsFileError(ValueError):
    """The prompts file is missing, not JSON, malformed, or does not fit the video."""


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
        if (
            self.points is not None
            and self.labels is not None
            and len(self.points) != len(self.labels)
        ):
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
