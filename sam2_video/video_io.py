"""Reading whole videos for the offline predictor (live sources stream frames instead)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoReadError(ValueError):
    """A video file or frame folder that cannot be read."""


def iter_video_file(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame with PyAV: yields (H, W, 3) uint8 RGB."""
    import av  # imported lazily: the image-only tools do not need it

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path} has no video stream")
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"cannot decode {path}: {exc}") from exc


def load_video_frames(video: str | Path) -> np.ndarray:
    """Load every frame of a video file or a folder of `<int>.jpg` files -> (T, H, W, 3) uint8."""
    path = Path(video)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
        try:
            files.sort(key=lambda p: int(p.stem))
        except ValueError as exc:
            raise VideoReadError(f"frame files in {path} must be named <int>.jpg") from exc
        frames = []
        for file in files:
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise VideoReadError(f"cannot read frame {file}")
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    elif path.is_file():
        frames = list(iter_video_file(path))
    else:
        raise VideoReadError(f"video not found: {path}")
    if not frames:
        raise VideoReadError(f"{path} holds no frames")
    if len({f.shape for f in frames}) != 1:
        raise VideoReadError(f"frames of {path} differ in size")
    return np.stack(frames)
