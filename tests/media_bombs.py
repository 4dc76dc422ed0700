"""Test helper: tiny files that decode to huge frames (written in a few seconds, kilobytes)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def write_bilevel_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit grayscale PNG of `width` x `height` black pixels (16000^2: about 31 KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def write_h264(
    path: Path, width: int, height: int, frames: int = 2, rotation: int | None = None
) -> Path:
    """An H.264 mp4 of `frames` frames; the left half of each is white, the right black (so
    a test can tell orientation; above 4 Mpx they are all black, built without an RGB copy).
    rotation: display-matrix degrees (counterclockwise)."""
    import ctypes

    import av

    if width * height > 4 << 20:
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            ctypes.memset(
                plane.buffer_ptr, 16 if plane is frame.planes[0] else 128, plane.buffer_size
            )
    else:
        image = np.zeros((height, width, 3), np.uint8)
        image[:, : width // 2] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
