"""Reading whole videos for the offline predictor (live sources stream frames instead).

Frames are held as uint8 at the smaller of the native and the model resolution (in pixels):
a 960x540 clip for a 1024 model stays native (1.5 MB a frame), for a 256 model it is resized
at load (0.2 MB a frame); either way the per-frame step turns it into the same model input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sam2_video.utils.transforms import resize_uint8

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")

# How a native frame becomes the model's S x S input:
#   "bilinear"     antialiased bilinear on uint8 (`resize_uint8`), as the streaming session;
#   "pil_bicubic"  Pillow's BICUBIC, as the official loader of JPEG folders (same pixels).
FrameResize = Literal["bilinear", "pil_bicubic"]


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


def iter_frame_folder(
    path: Path, size: int | None = None
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """Frames of a folder of `<int>.jpg` files in index order, decoded by Pillow (as the
    official loader): yields (native (H, W), frame), the frame (H, W, 3) uint8 RGB, or
    (size, size, 3) resized with Pillow's bicubic filter where that has fewer pixels."""
    from PIL import Image

    files = [p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
    try:
        files.sort(key=lambda p: int(p.stem))
    except ValueError as exc:
        raise VideoReadError(f"frame files in {path} must be named <int>.jpg") from exc
    for file in files:
        try:
            with Image.open(file) as image:
                rgb = image.convert("RGB")
                native_hw = (rgb.height, rgb.width)
                if size is not None and rgb.width * rgb.height > size * size:
                    rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
                yield native_hw, np.array(rgb)
        except OSError as exc:
            raise VideoReadError(f"cannot read frame {file}: {exc}") from exc


def resize_frame(frame: np.ndarray, size: int, method: FrameResize) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 with `method` (see `FrameResize`)."""
    if frame.shape[:2] == (size, size):
        return frame
    if method == "pil_bicubic":
        from PIL import Image

        return np.array(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))
    chw = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    return resize_uint8(chw, size).permute(1, 2, 0).numpy()


def compact_frames(
    frames: Iterable[np.ndarray], size: int, method: FrameResize
) -> tuple[np.ndarray, tuple[int, int]]:
    """Stack frames, each resized to size x size at once if that is smaller than native.

    Returns ((T, h, w, 3) uint8, native (H, W)). Resizing now or at the step gives the same
    pixels, so this only decides what is held in memory.
    """

    def resized() -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        for frame in frames:
            hw = (int(frame.shape[0]), int(frame.shape[1]))
            yield hw, resize_frame(frame, size, method) if hw[0] * hw[1] > size * size else frame

    return _stack(resized())


def _stack(
    frames: Iterable[tuple[tuple[int, int], np.ndarray]],
) -> tuple[np.ndarray, tuple[int, int]]:
    """(native (H, W), held frame) pairs -> ((T, h, w, 3) uint8, native (H, W))."""
    held, native_hw = [], None
    for hw, frame in frames:
        if native_hw is None:
            native_hw = hw
        elif hw != native_hw:
            raise VideoReadError(f"frames differ in size: {hw} after {native_hw}")
        held.append(frame)
    if native_hw is None:
        raise VideoReadError("the video holds no frames")
    return np.stack(held), native_hw


def load_video_frames(
    video: str | Path, size: int
) -> tuple[np.ndarray, tuple[int, int], FrameResize]:
    """Every frame of a video file or a folder of `<int>.jpg` files, held compactly.

    Returns ((T, h, w, 3) uint8 frames from `compact_frames`, native (H, W), the resize
    method for frames still at native size): folders are decoded and resized with Pillow
    (bicubic) to give the official predictor's pixels, files with PyAV and the streaming
    session's bilinear resize.
    """
    path = Path(video)
    if not path.exists():
        raise VideoReadError(f"video not found: {path}")
    method: FrameResize
    try:
        if path.is_dir():
            # Decoded and resized together (the frame stays a Pillow image in between).
            method = "pil_bicubic"
            frames, native_hw = _stack(iter_frame_folder(path, size))
        else:
            method = "bilinear"
            frames, native_hw = compact_frames(iter_video_file(path), size, method)
    except VideoReadError as exc:
        raise VideoReadError(f"{path}: {exc}") from exc
    return frames, native_hw, method
