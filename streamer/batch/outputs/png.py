"""DAVIS-style index PNGs: one palette image per frame, pixel value = object index.

`<name>_png/00000.png`, `00001.png`, ... are mode "P" (8-bit palette) PNGs with the DAVIS / VOC
palette: 0 is background (black), 1..255 are objects in the order they were first added (an
index never changes). Where masks overlap, the object added later wins. `objects.json` in the
same folder maps each index to the tracker's object id: `{"1": 4, "2": 7}`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import numpy as np
from PIL import Image

from sam2_video import FrameResult
from streamer.batch.outputs.base import MaskWriter, VideoInfo
from streamer.ingest.base import VideoFrame

MAX_OBJECTS = 255  # one byte per pixel, 0 is background


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


class PaletteWriter(MaskWriter):
    """Writes one index PNG per frame into `<name>_png/` (see the module docstring)."""

    def __init__(self, out_dir: Path, info: VideoInfo) -> None:
        super().__init__(out_dir, info)
        self.folder = self.out_dir / f"{info.name}_png"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._palette = davis_palette()
        self._index_of: dict[int, int] = {}  # object id -> palette index
        self._closed = False

    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Save the frame's (H, W) palette PNG: pixel value = object index, 0 = background."""
        labels = np.zeros((self.info.height, self.info.width), np.uint8)  # (H, W)
        for k, obj_id in enumerate(result.obj_ids):
            labels[result.masks[k]] = self._index(int(obj_id))
        image = Image.fromarray(labels)
        image.putpalette(self._palette)  # "L" -> "P": the values stay, colours come with them
        image.save(self.folder / f"{result.frame_idx:05d}.png", optimize=False)
        self.frames_written += 1

    def _index(self, obj_id: int) -> int:
        index = self._index_of.get(obj_id)
        if index is None:
            if len(self._index_of) >= MAX_OBJECTS:
                raise ValueError(f"an index PNG holds at most {MAX_OBJECTS} objects")
            index = self._index_of[obj_id] = len(self._index_of) + 1
        return index

    def close(self) -> list[Path]:
        """Write objects.json (palette index -> object id) once; returns the folder."""
        mapping = self.folder / "objects.json"
        if not self._closed:
            self._closed = True
            mapping.write_text(json.dumps({str(i): o for o, i in self._index_of.items()}) + "\n")
        return [self.folder]
