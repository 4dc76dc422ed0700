"""Frame-size limits, checked before a frame is allocated (settings `max_frame_pixels`,
`max_frame_side`).

A 238 KB H.264 file of 8192x8192 frames, or a 34 KB 1-bit PNG of 16000x16000, decodes to
gigabytes. Every source checks the size twice: from the container or codec header when it
opens (refused before any frame is decoded), and on every decoded frame (a stream may change
resolution midway) before converting it to RGB. FFmpeg's decoders get the pixel cap too
(`max_pixels`), so even a header that hides the size cannot make them allocate a larger frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamer.ingest.base import SourceError

if TYPE_CHECKING:
    from streamer.settings import Settings

DEFAULT_MAX_FRAME_PIXELS = 4096 * 4096
DEFAULT_MAX_FRAME_SIDE = 8192


class FrameTooLargeError(SourceError, ValueError):
    """A source whose frames are above the limits (a session creation answers 400)."""


@dataclass(frozen=True)
class FrameLimits:
    """max_pixels: width * height at most; max_side: width and height at most."""

    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    max_side: int = DEFAULT_MAX_FRAME_SIDE

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_side < 1:
            raise ValueError("frame limits must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> FrameLimits:
        """The limits of `settings.max_frame_pixels` and `settings.max_frame_side`."""
        return cls(max_pixels=settings.max_frame_pixels, max_side=settings.max_frame_side)

    def problem(self, width: int, height: int) -> str | None:
        """Why a `width` x `height` frame is refused, or None (unknown sizes, 0, pass)."""
        if width > self.max_side or height > self.max_side:
            return f"frames are {width}x{height}, above the limit of {self.max_side} px a side"
        if width * height > self.max_pixels:
            return (
                f"frames are {width}x{height} ({width * height} pixels), above the limit of "
                f"{self.max_pixels} pixels (max_frame_pixels)"
            )
        return None

    def check(self, width: int, height: int, *, what: str) -> None:
        """Raise FrameTooLargeError naming `what` (the source) when the size is refused."""
        problem = self.problem(width, height)
        if problem is not None:
            raise FrameTooLargeError(f"{what}: {problem}")

    def decoder_options(self) -> dict[str, str]:
        """FFmpeg codec options that make the decoder itself refuse larger frames."""
        return {"max_pixels": str(self.max_pixels)}

    def decode_refusal(self, what: str) -> str:
        """The message for a decoder that refused a frame whose size the header hid."""
        return (
            f"{what}: a frame could not be decoded within the limit of {self.max_pixels} "
            "pixels (max_frame_pixels); the video is larger or corrupt"
        )
