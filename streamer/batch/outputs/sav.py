"""SA-V style masklet JSON (the annotation format of Meta's SA-V dataset), every frame.

Two files, named as the official reader (`sav_dataset/utils/sav_utils.py`, `SAVDataset`)
looks for them: `<name>_manual.json` holds the masklets the user prompted at least once,
`<name>_auto.json` the auto-seeded ones (each written even when empty). Both follow the SA-V
train annotations (sav_dataset/README.md):
* `video_id` (the input's stem), `video_duration` (s), `video_frame_count`, `video_height`,
  `video_width`, `video_resolution` (H * W): floats, as in SA-V.
* `masklet`: list over frames of lists over masklets of COCO RLE (`counts` str); a masklet not
  yet added, or absent, on a frame has an empty mask there.
* per masklet, in the order objects were first added: `masklet_id` (the tracker's object id),
  `masklet_size_abs` / `masklet_size_rel` (mean area in pixels / as a fraction of the frame,
  over the frames where it is visible), `masklet_size_bucket` ("small" < 32^2 <= "medium" <
  96^2 <= "large"), `masklet_visibility_changes` (visible <-> invisible flips after its first
  appearance), `masklet_first_appeared_frame`, `masklet_frame_count` (frames it was tracked on),
  `masklet_edited_frame_count` (frames with a prompt from the user), `masklet_type` ("manual"
  when the user prompted it at least once, "auto" for auto-seeded objects).
* `masklet_num`.
* `annot_sample_rate`: 1 (not an SA-V field). SA-V annotates every 4th frame of its 24 fps
  videos, and `SAVDataset` drops 3 frames in 4 by default to match; for these files, which
  annotate every frame, build it with `SAVDataset(folder, annot_sample_rate=1)`.
* with a detector (`--detector`): `masklet_label`, `masklet_class_id`, `masklet_det_score`.

Per-frame masks go to a temporary file as frames arrive and are assembled on `close`, so
memory stays flat on long videos.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2_video import FrameResult
from streamer.batch.outputs.base import MaskWriter, VideoInfo, encode_rle
from streamer.ingest.slot import VideoFrame

_SMALL, _LARGE = 32**2, 96**2


@dataclass
class _Masklet:
    """Running statistics of one object."""

    added_frame: int
    first_visible: int | None = None
    frames_tracked: int = 0
    visible_frames: int = 0
    area_sum: int = 0
    visibility_changes: int = 0
    edited_frames: int = 0
    last_visible: bool | None = None

    def update(self, frame: int, area: int, edited: bool) -> None:
        visible = area > 0
        self.frames_tracked += 1
        self.edited_frames += int(edited)
        if visible:
            self.visible_frames += 1
            self.area_sum += area
            if self.first_visible is None:
                self.first_visible = frame
        if self.first_visible is not None and self.last_visible is not None:
            self.visibility_changes += int(visible != self.last_visible)
        if self.first_visible is not None:
            self.last_visible = visible


class SavWriter(MaskWriter):
    """Writes `<name>_manual.json` and `<name>_auto.json` (see the module docstring)."""

    def __init__(self, out_dir: Path, info: VideoInfo) -> None:
        super().__init__(out_dir, info)
        self.paths = {
            kind: self.out_dir / f"{info.name}_{kind}.json" for kind in ("manual", "auto")
        }
        # One JSON line of {id: rle} per frame; closed (and deleted) by close().
        self._frames = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._masklets: dict[int, _Masklet] = {}  # insertion order = masklet order
        self._closed = False

    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Record the frame's RLE mask and area per object (empty RLE when absent)."""
        rles = {}
        for k, obj_id in enumerate(result.obj_ids):
            obj_id = int(obj_id)
            mask = result.masks[k]
            area = int(mask.sum())
            stats = self._masklets.setdefault(obj_id, _Masklet(added_frame=result.frame_idx))
            stats.update(result.frame_idx, area, obj_id in edited)
            if area:
                rles[str(obj_id)] = encode_rle(mask)
        self._frames.write(json.dumps(rles) + "\n")
        self.frames_written += 1

    def close(self) -> list[Path]:
        """Write the SA-V JSON file(s) (per-masklet RLEs and stats) once; returns them."""
        paths = list(self.paths.values())
        if self._closed:
            return paths
        self._closed = True
        height, width = self.info.height, self.info.width
        header = {
            "video_id": self.info.name,
            "video_duration": self.frames_written / float(self.info.fps),
            "video_frame_count": float(self.frames_written),
            "video_height": float(height),
            "video_width": float(width),
            "video_resolution": float(height * width),
            "annot_sample_rate": 1,
        }
        kinds = {
            obj_id: "manual" if s.edited_frames else "auto" for obj_id, s in self._masklets.items()
        }
        for kind, path in self.paths.items():
            ids = [obj_id for obj_id, k in kinds.items() if k == kind]
            self._write(path, header, ids, kind)
        self._frames.close()
        return paths

    def _write(self, path: Path, header: dict, ids: list[int], kind: str) -> None:
        height, width = self.info.height, self.info.width
        empty = encode_rle(np.zeros((height, width), bool))
        stats = [self._masklets[obj_id] for obj_id in ids]
        sizes = [s.area_sum / s.visible_frames if s.visible_frames else 0.0 for s in stats]
        per_masklet = {
            "masklet_id": ids,
            "masklet_size_rel": [size / (height * width) for size in sizes],
            "masklet_size_abs": sizes,
            "masklet_size_bucket": [_bucket(size) for size in sizes],
            "masklet_visibility_changes": [s.visibility_changes for s in stats],
            "masklet_first_appeared_frame": [
                s.first_visible if s.first_visible is not None else s.added_frame for s in stats
            ],
            "masklet_frame_count": [s.frames_tracked for s in stats],
            "masklet_edited_frame_count": [s.edited_frames for s in stats],
            "masklet_type": [kind] * len(ids),
            "masklet_num": len(ids),
        }
        if self.labels:  # detector-seeded: each masklet's class (None where none was found)
            found = [self.labels.get(obj_id) for obj_id in ids]
            per_masklet["masklet_label"] = [x.label if x else None for x in found]
            per_masklet["masklet_class_id"] = [x.class_id if x else None for x in found]
            per_masklet["masklet_det_score"] = [x.det_score if x else None for x in found]
        self._frames.seek(0)
        with path.open("w") as out:
            out.write(json.dumps(header)[:-1] + ', "masklet": [')
            for i, line in enumerate(self._frames):
                frame_rles = json.loads(line)
                row = [frame_rles.get(str(obj_id), empty) for obj_id in ids]
                out.write(("," if i else "") + "\n" + json.dumps(row))
            out.write("\n], " + json.dumps(per_masklet)[1:] + "\n")


def _bucket(size_abs: float) -> str:
    if size_abs < _SMALL:
        return "small"
    return "medium" if size_abs < _LARGE else "large"
