"""Overlay video: the input with every object's mask blended in, outlined and labelled.

`<name>_overlay.mp4`, H.264 (libx264; MPEG-4 part 2 when FFmpeg lacks libx264), yuv420p, at the
input's frame rate, one output frame per input frame. Colours come from
`streamer.overlay.object_color`, so an object has the same colour here and in the live view.
"""

from __future__ import annotations

from collections.abc import Collection
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np

from sam2_video import FrameResult
from streamer.batch.outputs.base import MaskWriter, VideoInfo
from streamer.ingest.slot import VideoFrame
from streamer.overlay import draw_overlay

# Good-looking defaults: x264 at constant quality; mpeg4 has no CRF, so a generous bit rate.
_ENCODER_OPTIONS = {"libx264": {"crf": "20", "preset": "veryfast"}, "mpeg4": {"b": "4M"}}


def pick_encoder() -> str:
    """libx264 when this FFmpeg build has it, else mpeg4 (always built in)."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class OverlayVideoWriter(MaskWriter):
    """Encodes `<name>_overlay.mp4` (see the module docstring)."""

    def __init__(self, out_dir: Path, info: VideoInfo, *, codec: str | None = None) -> None:
        super().__init__(out_dir, info)
        self.path = self.out_dir / f"{info.name}_overlay.mp4"
        self.codec = codec or pick_encoder()
        # yuv420p stores chroma per 2x2 block: odd sizes are padded by one edge pixel.
        self._size = (info.width + info.width % 2, info.height + info.height % 2)
        self._container: av.container.OutputContainer | None = av.open(str(self.path), "w")
        try:
            self._stream = cast(
                av.VideoStream,  # a video codec's stream (the stubs cannot tell from its name)
                self._container.add_stream(
                    self.codec, rate=info.fps, options=_ENCODER_OPTIONS.get(self.codec, {})
                ),
            )
            self._stream.width, self._stream.height = self._size
            self._stream.pix_fmt = "yuv420p"
        except Exception:
            self._container.close()
            raise
        self._time_base = Fraction(1) / info.fps

    def write(
        self, frame: VideoFrame, result: FrameResult, *, edited: Collection[int] = ()
    ) -> None:
        """Encode the frame with its masks drawn over it (padded to even sizes)."""
        canvas = draw_overlay(frame.image, result.masks, result.obj_ids)  # (H, W, 3) RGB
        width, height = self._size
        if (canvas.shape[1], canvas.shape[0]) != (width, height):
            canvas = cv2.copyMakeBorder(
                canvas,
                0,
                height - canvas.shape[0],
                0,
                width - canvas.shape[1],
                cv2.BORDER_REPLICATE,
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas), format="rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = self._time_base
        if self._container is None:
            raise ValueError(f"{self.path} is closed")
        self._container.mux(self._stream.encode(video_frame))
        self.frames_written += 1

    def close(self) -> list[Path]:
        """Flush the encoder and close the file (again: no-op)."""
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.mux(self._stream.encode(None))  # flush delayed frames
            finally:
                container.close()
        return [self.path]
