"""What every mask writer shares: the video's description, the writer interface, COCO RLE."""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_api

from sam2_video import FrameResult
from sam2_video.detect.types import ObjectLabel
from streamer.ingest.slot import VideoFrame


@dataclass(frozen=True)
class VideoInfo:
    """The input video, as the writers name and size their outputs.

    name: stem used in output file names and as the video id. width / height: frame size in
    pixels. fps: frame rate (the overlay video uses it). frame_count: frames the container
    announces (None when unknown; the writers count the frames they get).
    """

    name: str
    width: int
    height: int
    fps: Fraction
    frame_count: int | None = None


@dataclass(frozen=True)
class OutputOptions:
    """How the writers lay out their files (the same for every video of a run).

    png_layout: "indexed" (one palette PNG per frame, value = object id) or "per-object"
        (SA-V val/test: one binary PNG per object per frame); see outputs/png.py.
    write_frames: also write each decoded frame as `frames/<video>/<frame:05d>.jpg`, the
        `file_name`s of the COCO JSON.
    """

    png_layout: str = "indexed"
    write_frames: bool = False


class MaskWriter(abc.ABC):
    """Writes the tracking results of one video, frame by frame, into `out_dir`.

    `write` is called once per frame, in order; `close` finishes the files and returns their
    paths. Writers raise OSError when they cannot write.
    """

    def __init__(self, out_dir: Path, info: VideoInfo) -> None:
        self.out_dir = Path(out_dir)
        self.info = info
        self.frames_written = 0
        # obj_id -> what a detector said it is; the tracking driver shares its live mapping.
        self.labels: Mapping[int, ObjectLabel] = {}

    @abc.abstractmethod
    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Add one frame: the decoded frame (image (H, W, 3) uint8 RGB, pts), its result, and
        the ids of the objects the user prompted on this frame (`edited`)."""

    @abc.abstractmethod
    def close(self) -> list[Path]:
        """Finish writing (again: no-op); returns the files, or the folder of a per-frame
        sequence, written."""


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> COCO RLE `{"size": [H, W], "counts": str}` (JSON-ready)."""
    rle = mask_api.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def rle_area_and_bbox(rle: dict[str, Any]) -> tuple[int, list[float]]:
    """Area in pixels and COCO bbox [x, y, w, h] (pycocotools' convention) of a JSON RLE."""
    coco = {"size": rle["size"], "counts": rle["counts"].encode()}
    return int(mask_api.area(coco)), [float(v) for v in mask_api.toBbox(coco)]
