"""YOLO segmentation labels of a tracked video: one label file per frame.

`<name>_yolo/`:
* `labels/<frame:05d>.txt`: one line per object visible on the frame: the class id, then the
  normalised polygon of its mask (`x1 y1 x2 y2 ...` in [0, 1]; `sam2_video.utils.polygons`).
  The class is the detector's (`--detector`), 0 for objects no detector named. Frames with no
  object get an empty file (a YOLO "background" image).
* `data.yaml`: `names` (class id -> name) of the classes used, for Ultralytics' loaders
  (images extracted to `images/<frame:05d>.jpg` next to `labels/` complete the dataset).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import yaml

from sam2_video import FrameResult
from sam2_video.utils.polygons import yolo_segment_line
from streamer.batch.outputs.base import MaskWriter, VideoInfo
from streamer.ingest.slot import VideoFrame


class YoloWriter(MaskWriter):
    """Writes `<name>_yolo/labels/*.txt` and `data.yaml` (see the module docstring)."""

    def __init__(self, out_dir: Path, info: VideoInfo) -> None:
        super().__init__(out_dir, info)
        self.folder = self.out_dir / f"{info.name}_yolo"
        self.labels_dir = self.folder / "labels"
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        self._names: dict[int, str] = {}
        self._closed = False

    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Write this frame's label file (one line per object with a polygon)."""
        lines = []
        for k, obj_id in enumerate(result.obj_ids):
            label = self.labels.get(int(obj_id))
            class_id = label.class_id if label is not None else 0
            self._names.setdefault(class_id, label.label if label is not None else "object")
            line = yolo_segment_line(class_id, result.masks[k])
            if line is not None:
                lines.append(line)
        path = self.labels_dir / f"{result.frame_idx:05d}.txt"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        self.frames_written += 1

    def close(self) -> list[Path]:
        """Write `data.yaml` (the class names used); returns the `<name>_yolo` folder."""
        if not self._closed:
            self._closed = True
            names = dict(sorted(self._names.items())) or {0: "object"}
            data = {"path": ".", "train": "images", "val": "images", "names": names}
            (self.folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return [self.folder]
