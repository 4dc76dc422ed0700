"""Index PNGs that the official SAM 2 / DAVIS / SA-V tools read as they are.

Layouts (`OutputOptions.png_layout`), under `OUT/png/` so that `OUT/png` is the
`--pred_root` / `--gt_root` of the official `sav_dataset/sav_evaluator.py`:

* `indexed` (default, DAVIS): `png/<video>/<frame:05d>.png`, one mode "P" (8-bit palette) PNG
  per frame with the DAVIS palette; pixel value = object id, 0 = background. An object id
  above 255 does not fit a byte: `indexed` then stops with a ValueError that says to use
  `per-object`. Where masks overlap, the smallest object id wins, as in the official
  `tools/vos_inference.py` (it paints objects in decreasing id order).
* `per-object` (SA-V val/test): `png/<video>/<obj:03d>/<frame:05d>.png`, one binary PNG (0 /
  1, DAVIS palette) per object per frame, from the frame the object was added; no id limit and
  no overlap to resolve.

Metadata lives outside the PNG tree (the evaluator takes every entry of a video folder for a
frame or an object): `OUT/<video>_png.json` = {"video", "layout", "folder" (relative to OUT),
"frames", "obj_ids"}.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import numpy as np
from PIL import Image

from sam2_video import FrameResult
from streamer.batch.outputs.base import MaskWriter, OutputOptions, VideoInfo
from streamer.ingest.slot import VideoFrame

MAX_INDEXED_ID = 255  # one byte per pixel, 0 is background
PNG_LAYOUTS = ("indexed", "per-object")


def davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC colour map as a flat [r0, g0, b0, r1, ...] list of 768 values.

    Index i spreads its bits over the three channels, most significant bit first, so the
    first indices are far apart: 1 dark red, 2 dark green, 3 olive, 4 dark blue, ...
    """
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        bits = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        palette.extend(rgb)
    return palette


def index_image(obj_ids: list[int], masks: np.ndarray) -> np.ndarray:
    """(N,) ids and (N, H, W) bool masks -> (H, W) uint8 labels, value = object id, the
    smallest id on top where masks overlap. Raises ValueError for an id outside 1..255."""
    labels = np.zeros(masks.shape[1:], np.uint8)  # (H, W)
    for k in sorted(range(len(obj_ids)), key=lambda k: -obj_ids[k]):  # largest id first
        obj_id = obj_ids[k]
        if not 1 <= obj_id <= MAX_INDEXED_ID:
            raise ValueError(
                f"object id {obj_id} does not fit an indexed PNG (ids 1..{MAX_INDEXED_ID}); "
                "use --png-layout per-object"
            )
        labels[masks[k]] = obj_id
    return labels


class PaletteWriter(MaskWriter):
    """Writes the PNGs of one video in `OutputOptions.png_layout` (see the module docstring)."""

    def __init__(self, out_dir: Path, info: VideoInfo, options: OutputOptions) -> None:
        super().__init__(out_dir, info)
        if options.png_layout not in PNG_LAYOUTS:
            raise ValueError(f"png layout must be one of {PNG_LAYOUTS}, not {options.png_layout!r}")
        self.layout = options.png_layout
        self.folder = self.out_dir / "png" / info.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metadata = self.out_dir / f"{info.name}_png.json"
        self._palette = davis_palette()
        self._obj_ids: dict[int, None] = {}  # every id seen, in order
        self._closed = False

    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Save the frame's PNG(s) in the writer's layout: (H, W) uint8, value = object id
        (`indexed`) or 0/1 (`per-object`, one PNG per object); raises ValueError for an id
        that does not fit `indexed`."""
        obj_ids = [int(i) for i in result.obj_ids]
        self._obj_ids.update(dict.fromkeys(obj_ids))
        name = f"{result.frame_idx:05d}.png"
        if self.layout == "indexed":
            if obj_ids:
                labels = index_image(obj_ids, result.masks)
            else:
                labels = np.zeros((self.info.height, self.info.width), np.uint8)
            self._save(labels, self.folder / name)
        else:
            for k, obj_id in enumerate(obj_ids):
                folder = self.folder / f"{obj_id:03d}"
                folder.mkdir(exist_ok=True)
                self._save(result.masks[k].astype(np.uint8), folder / name)
        self.frames_written += 1

    def _save(self, labels: np.ndarray, path: Path) -> None:
        image = Image.fromarray(labels)
        image.putpalette(self._palette)  # "L" -> "P": the values stay, colours come with them
        image.save(path, optimize=False)

    def close(self) -> list[Path]:
        """Write `<video>_png.json` once; returns the PNG folder and that file."""
        if not self._closed:
            self._closed = True
            record = {
                "video": self.info.name,
                "layout": self.layout,
                "folder": self.folder.relative_to(self.out_dir).as_posix(),
                "frames": self.frames_written,
                "obj_ids": list(self._obj_ids),
            }
            self.metadata.write_text(json.dumps(record) + "\n")
        return [self.folder, self.metadata]
