"""Server messages as Python objects: masks decoded to numpy (docs/protocol.md, "frame"/"ack")."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from pycocotools import mask as mask_api


@dataclass(frozen=True)
class Masklet:
    """One object on one frame.

    mask: (h, w) bool, the frame's size divided by the connection's `mask_downscale` (1 by
    default: full size). bbox: [x, y, w, h] pixels of the full frame. label: the object's class
    name when the server gives one (detections), else None.
    """

    obj_id: int
    mask: np.ndarray
    bbox: tuple[float, float, float, float]
    area: int
    score: float
    iou: float
    label: str | None = None


@dataclass(frozen=True)
class Frame:
    """The masklets of one processed frame. pts * time_base = the source's timestamp (s)."""

    frame_idx: int
    source_index: int
    pts: int | None
    time_base: Fraction | None
    width: int
    height: int
    objects: list[Masklet]
    lost: list[int] = field(default_factory=list)
    latency: float = 0.0

    def masks(self) -> dict[int, np.ndarray]:
        """{obj_id: (h, w) bool}."""
        return {m.obj_id: m.mask for m in self.objects}


@dataclass(frozen=True)
class Reply:
    """The answer to a request (`ack`): the refined masklets of the prompted frame."""

    request: str
    frame_idx: int
    obj_id: int | None
    obj_ids: list[int]
    objects: list[Masklet]
    raw: dict[str, Any]


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE {size: [h, w], counts: str} -> (h, w) bool."""
    coco = {"size": list(rle["size"]), "counts": rle["counts"].encode()}
    return mask_api.decode(coco).astype(bool)


def masklet(data: dict[str, Any]) -> Masklet:
    """A masklet message's dict -> `Masklet` (its RLE decoded to an (H, W) bool mask)."""
    return Masklet(
        obj_id=int(data["obj_id"]),
        mask=decode_mask(data["rle"]),
        bbox=tuple(data["bbox"]),
        area=int(data["area"]),
        score=float(data["score"]),
        iou=float(data["iou"]),
        label=data.get("label"),
    )


def frame(data: dict[str, Any]) -> Frame:
    """A `frame` message's dict -> `Frame`."""
    time_base = data.get("time_base")
    return Frame(
        frame_idx=int(data["frame_idx"]),
        source_index=int(data["source_index"]),
        pts=data.get("pts"),
        time_base=Fraction(time_base) if time_base else None,
        width=int(data["width"]),
        height=int(data["height"]),
        objects=[masklet(o) for o in data.get("objects", [])],
        lost=list(data.get("lost", [])),
        latency=float(data.get("latency", 0.0)),
    )


def reply(data: dict[str, Any]) -> Reply:
    """An `ack` message's dict -> `Reply`."""
    return Reply(
        request=str(data.get("request")),
        frame_idx=int(data.get("frame_idx", -1)),
        obj_id=data.get("obj_id"),
        obj_ids=list(data.get("obj_ids", [])),
        objects=[masklet(o) for o in data.get("objects", [])],
        raw=data,
    )
