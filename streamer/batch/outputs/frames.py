"""The decoded frames as JPEGs, `frames/<video>/<frame:05d>.jpg` under OUT: the files the
COCO JSON's `file_name`s name (`OutputOptions.write_frames`, `track --write-frames`)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import cv2

from sam2_video import FrameResult
from streamer.batch.outputs.base import MaskWriter, VideoInfo
from streamer.ingest.slot import VideoFrame

JPEG_QUALITY = 95


def frame_file_name(video: str, frame_idx: int) -> str:
    """Path of a frame's JPEG relative to OUT (the COCO `file_name`)."""
    return f"frames/{video}/{frame_idx:05d}.jpg"


class FrameWriter(MaskWriter):
    """Writes each decoded frame (RGB) as a JPEG (quality `JPEG_QUALITY`)."""

    def __init__(self, out_dir: Path, info: VideoInfo) -> None:
        super().__init__(out_dir, info)
        self.folder = self.out_dir / "frames" / info.name
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Write the frame's (H, W, 3) RGB image as `frames/<video>/<frame_idx:05d>.jpg`."""
        path = self.out_dir / frame_file_name(self.info.name, result.frame_idx)
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)  # (H, W, 3) uint8
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"cannot encode frame {result.frame_idx} as JPEG")
        path.write_bytes(data.tobytes())
        self.frames_written += 1

    def close(self) -> list[Path]:
        """Nothing to flush; returns the frames folder."""
        return [self.folder]
