"""Helpers for driving the browser client in tests/test_browser.py: the frame-index bar code of
the fake camera clip, the page's summary and bounded waits, and reading its canvases."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from playwright import sync_api

from streamer.overlay import object_color

BAR_BITS, BAR_CELL = 7, 8  # frame index as 7 black/white 8x8 squares, bottom-right
WAIT_MS = 60_000  # one frame of the micro model takes 0.1-3 s on 2 busy cores

# A canvas's pixels as {size: [w, h], rgba: base64} (chunked: apply() takes bounded arguments).
CANVAS_RGBA_JS = """(canvas) => {
    const bytes = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return { size: [canvas.width, canvas.height], rgba: btoa(text) };
}"""


def _rgba(got: dict) -> np.ndarray:
    """(H, W, 4) uint8 from a CANVAS_RGBA_JS result."""
    width, height = got["size"]
    return np.frombuffer(base64.b64decode(got["rgba"]), np.uint8).reshape(height, width, 4)


def draw_bar_code(image: np.ndarray, index: int) -> None:
    """Write `index` into the bottom-right corner of an (H, W, 3) frame: one black or white
    BAR_CELL x BAR_CELL square per bit, least significant bit rightmost."""
    for bit in range(BAR_BITS):
        x = image.shape[1] - (bit + 1) * BAR_CELL
        image[-BAR_CELL:, x : x + BAR_CELL] = 255 if index >> bit & 1 else 0


def read_bar_code(image: np.ndarray) -> int:
    """The index draw_bar_code wrote (square centres: codec blur at the edges is harmless)."""
    margin = BAR_CELL // 4
    value = 0
    for bit in range(BAR_BITS):
        x = image.shape[1] - (bit + 1) * BAR_CELL
        centre = image[-BAR_CELL + margin : -margin, x + margin : x + BAR_CELL - margin, :3]
        value |= int(centre.astype(np.float64).mean() > 128) << bit
    return value


def summary(page) -> dict:
    return page.evaluate("() => window.sam2stream.summary()")


def wait_for(page, condition: str, arg=None) -> None:
    """Wait (bounded) until the JS expression `condition` holds; it sees the page's summary as
    `s` and `arg`. On timeout, fails with the summary and the page's status line."""
    try:
        page.wait_for_function(
            f"(arg) => {{ const s = window.sam2stream.summary(); return ({condition}); }}",
            arg=arg,
            timeout=WAIT_MS,
            polling=100,
        )
    except sync_api.TimeoutError:
        pytest.fail(
            f"not met in {WAIT_MS / 1000:.0f} s: {condition}\nsummary: {summary(page)}\n"
            f"status: {page.text_content('#message')}"
        )


def overlay_pixels(page, x: int, y: int, radius: int) -> np.ndarray:
    """(2r+1, 2r+1, 4) RGBA of the overlay canvas around source pixel (x, y)."""
    data = page.evaluate(
        """([x, y, r]) => {
            const canvas = document.getElementById("overlay");
            const image = canvas.getContext("2d").getImageData(x - r, y - r, 2 * r + 1, 2 * r + 1);
            return Array.from(image.data);
        }""",
        [x, y, radius],
    )
    return np.array(data, dtype=np.int32).reshape(2 * radius + 1, 2 * radius + 1, 4)


def click_source_pixel(page, x: float, y: float) -> None:
    """Click where source pixel (x, y) is shown (the stage has the frame's aspect ratio)."""
    box = page.locator("#prompt-layer").bounding_box()
    size = summary(page)["frameSize"]
    page.mouse.click(
        box["x"] + (x + 0.5) * box["width"] / size[0],
        box["y"] + (y + 0.5) * box["height"] / size[1],
    )


def colour_pixels(page, obj_id: int) -> int:
    """Overlay canvas pixels painted in `obj_id`'s colour (fill or outline)."""
    got = page.evaluate(f"""() => ({CANVAS_RGBA_JS})(document.getElementById("overlay"))""")
    pixels = _rgba(got).reshape(-1, 4).astype(np.int32)
    close = np.abs(pixels[:, :3] - np.array(object_color(obj_id))).max(axis=1) <= 4
    return int((close & (pixels[:, 3] > 0)).sum())


def shown_frame(page) -> tuple[dict, np.ndarray]:
    """The synced view's camera frame: ({pts, frame_idx, offsetMs} of the masklets it shows
    them with, (H, W, 4) RGBA)."""
    # One evaluation, so that the frame and the state it was drawn for belong together.
    got = page.evaluate(
        f"""() => ({{
            shown: window.sam2stream.state.shown,
            ...({CANVAS_RGBA_JS})(document.getElementById("frame-canvas")),
        }})"""
    )
    return got["shown"], _rgba(got)
