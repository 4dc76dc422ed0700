"""Writers of tracking results for the batch `track` command, one per output format.

    writer = make_writer("coco", out_dir, info)
    for frame, result in ...:
        writer.write(frame, result, edited=prompted_ids)
    paths = writer.close()

Formats: `coco` (COCO-style JSON), `sav` (SA-V masklet JSON), `png` (DAVIS index PNGs),
`mp4` (overlay video), `yolo` (YOLO segmentation labels). Each module's docstring gives its
exact layout.
"""

from __future__ import annotations

from pathlib import Path

from streamer.batch.outputs.base import MaskWriter, VideoInfo, encode_rle

__all__ = ["FORMATS", "MaskWriter", "VideoInfo", "encode_rle", "make_writer", "parse_formats"]

FORMATS = ("coco", "sav", "png", "mp4", "yolo")


def parse_formats(values: list[str] | None) -> list[str]:
    """["coco,png", "mp4"] -> ["coco", "png", "mp4"] (order kept, duplicates dropped).

    None or empty -> ["coco"]. Raises ValueError naming an unknown format.
    """
    formats: list[str] = []
    for value in values or ["coco"]:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in FORMATS:
                raise ValueError(
                    f"unknown output format {name!r}; choose from {', '.join(FORMATS)}"
                )
            if name not in formats:
                formats.append(name)
    if not formats:
        raise ValueError(f"no output format given; choose from {', '.join(FORMATS)}")
    return formats


def make_writer(fmt: str, out_dir: Path, info: VideoInfo) -> MaskWriter:
    """The writer for one format (modules are imported on demand)."""
    if fmt == "coco":
        from streamer.batch.outputs.coco import CocoWriter

        return CocoWriter(out_dir, info)
    if fmt == "sav":
        from streamer.batch.outputs.sav import SavWriter

        return SavWriter(out_dir, info)
    if fmt == "png":
        from streamer.batch.outputs.png import PaletteWriter

        return PaletteWriter(out_dir, info)
    if fmt == "mp4":
        from streamer.batch.outputs.mp4 import OverlayVideoWriter

        return OverlayVideoWriter(out_dir, info)
    if fmt == "yolo":
        from streamer.batch.outputs.yolo import YoloWriter

        return YoloWriter(out_dir, info)
    raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
