"""COCO-style JSON of a tracked video: one image per frame, one annotation per object per frame.

`<name>_coco.json`:
* `videos`: [{id: 1, name, width, height, length (frames), fps}]
* `images`: one per frame: {id (= frame index), frame_index, video_id, file_name
  ("frames/<name>/<frame:05d>.jpg", relative to the JSON's folder: written there by
  `track --write-frames`), width, height, pts, time}
* `annotations`: one per object visible on a frame: {id (1, 2, ...), image_id (= frame index),
  video_id, track_id (= object id), category_id 1, segmentation (COCO RLE, `counts` str),
  area, bbox [x, y, w, h] (pycocotools' convention), iscrowd 0, score (object presence
  probability), predicted_iou}. Objects with an empty mask on a frame get no annotation.
* `tracks`: [{id (= object id), category_id 1, first_frame, frames (frames with a mask)}]
* `categories`: [{id 1, name "object"}] (SAM 2 masks have no class); with a detector
  (`--detector`), class c is category c + 1 named by the detector, annotations also carry
  `label` and `det_score`, and objects no detector named are category 0 "object".

Annotations are streamed to the file as frames arrive, so memory stays flat on long videos.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

from sam2_video import FrameResult
from streamer.batch.outputs.base import MaskWriter, VideoInfo, encode_rle, rle_area_and_bbox
from streamer.batch.outputs.frames import frame_file_name
from streamer.ingest.slot import VideoFrame

CATEGORY = {"id": 1, "name": "object"}


class CocoWriter(MaskWriter):
    """Streams `<name>_coco.json` (see the module docstring for the schema)."""

    def __init__(self, out_dir: Path, info: VideoInfo) -> None:
        super().__init__(out_dir, info)
        self.path = self.out_dir / f"{info.name}_coco.json"
        self._file: IO[str] = self.path.open("w")
        self._file.write('{"annotations": [')
        self._images: list[dict[str, Any]] = []
        self._tracks: dict[int, dict[str, int]] = {}
        self._next_annotation_id = 1
        self._categories: dict[int, str] = {}  # category id -> name, as used

    def _category(self, obj_id: int) -> int:
        """Detector class `c` is category `c + 1`; objects no detector named are "object":
        category 1 in a run without a detector, 0 beside detector classes."""
        label = self.labels.get(obj_id)
        if label is not None:
            cid, name = label.class_id + 1, label.label
        else:
            cid, name = (0 if self.labels else 1), "object"
        self._categories.setdefault(cid, name)
        return cid

    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Add the frame's image entry and one annotation (COCO RLE) per object."""
        index = result.frame_idx
        time = None
        if frame.pts is not None and frame.time_base is not None:
            time = float(frame.pts * frame.time_base)
        self._images.append(
            {
                "id": index,
                "frame_index": index,
                "video_id": 1,
                "file_name": frame_file_name(self.info.name, index),
                "width": self.info.width,
                "height": self.info.height,
                "pts": frame.pts,
                "time": time,
            }
        )
        for k, obj_id in enumerate(result.obj_ids):
            mask = result.masks[k]
            if not mask.any():
                continue
            rle = encode_rle(mask)
            area, bbox = rle_area_and_bbox(rle)
            annotation = {
                "id": self._next_annotation_id,
                "image_id": index,
                "video_id": 1,
                "track_id": int(obj_id),
                "category_id": self._category(int(obj_id)),
                "segmentation": rle,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
                "score": _sigmoid(float(result.object_scores[k])),
                "predicted_iou": float(result.ious[k]),
            }
            if self._next_annotation_id > 1:
                self._file.write(",")
            label = self.labels.get(int(obj_id))
            if label is not None:
                annotation["label"], annotation["det_score"] = label.label, label.det_score
            self._file.write("\n" + json.dumps(annotation))
            self._next_annotation_id += 1
            track = self._tracks.setdefault(int(obj_id), {"first_frame": index, "frames": 0})
            track["frames"] += 1
        self.frames_written += 1

    def close(self) -> list[Path]:
        """Write the video and category entries and close the JSON (again: no-op)."""
        if self._file.closed:
            return [self.path]
        video = {
            "id": 1,
            "name": self.info.name,
            "width": self.info.width,
            "height": self.info.height,
            "length": self.frames_written,
            "fps": float(self.info.fps),
        }
        tracks = [
            {"id": obj_id, "category_id": self._category(obj_id), **fields}
            for obj_id, fields in sorted(self._tracks.items())
        ]
        rest = {"videos": [video], "images": self._images, "tracks": tracks}
        rest["categories"] = [
            {"id": cid, "name": name} for cid, name in sorted(self._categories.items())
        ] or [CATEGORY]
        self._file.write("\n]")
        for key, value in rest.items():
            self._file.write(f",\n{json.dumps(key)}: {json.dumps(value)}")
        self._file.write("}\n")
        self._file.close()
        return [self.path]


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
