"""The browser client (streamer/static/) in real headless Chromium against `sam2-stream serve`.

Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser is downloaded) gets a
fake camera that plays an MJPEG clip made from bedroom.mp4, publishes it over WebRTC to a
"webrtc" session of a server on 127.0.0.1 (micro model, CPU, ICE on loopback only), and the test
clicks on the picture like a user. Checks: frames reach the server, masklets reach the page,
the clicked object's mask is drawn in the overlay canvas at the click, the stats advance,
removing the object clears it; and the in-browser COCO RLE codec agrees with pycocotools.

Runs inside a loopback-only network namespace too
(`unshare -n sh -c 'ip link set lo up; python -m pytest -q tests/test_browser.py'`).
A screenshot goes to the test's tmp_path; with SAM2_STREAM_UPDATE_SCREENSHOT=1 also to
docs/screenshot.png. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
from conftest import DATA, MICRO_CHECKPOINT
from pycocotools import mask as mask_api

from streamer.overlay import object_color

sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright (pip install playwright)")

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "browser-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIP_SIZE = (320, 180)  # width, height
CLIP_FRAMES = 75  # 2.5 s at Chromium's 30 fps for MJPEG files (it loops the file)
CLICK = (200, 117)  # source pixels: the pink pillow on the bed
WAIT_MS = 60_000  # one frame of the micro model takes 0.1-3 s on 2 busy cores
STATIC_FILES = re.compile(r"^http://127\.0\.0\.1:\d+/([\w.-]+\.(html|js|css))?$")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    """An MJPEG file (concatenated JPEG frames) of bedroom.mp4's first frames at 320x180."""
    path = tmp_path_factory.mktemp("camera") / "bedroom.mjpeg"
    with av.open(str(DATA / "bedroom.mp4")) as container, path.open("wb") as out:
        for index, frame in enumerate(container.decode(video=0)):
            if index == CLIP_FRAMES:
                break
            image = cv2.resize(frame.to_ndarray(format="bgr24"), CLIP_SIZE, interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            out.write(jpeg.tobytes())
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL of `sam2-stream serve` (micro model, CPU, token, loopback ICE); bounded start."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        **os.environ,
        "SAM2_STREAM_AUTH_TOKEN": TOKEN,
        "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
    }
    command = [
        sys.executable, "-m", "streamer.cli", "-v", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--model", "sam2.1_micro", "--checkpoint", str(MICRO_CHECKPOINT),
        "--device", "cpu",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/readyz", headers=AUTH, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 90 s:\n{log_path.read_text()}")
            try:
                process.wait(timeout=0.2)  # the poll step; also notices an early exit
            except subprocess.TimeoutExpired:
                pass
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def browser(camera_clip):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={camera_clip}"],
            timeout=60_000,
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the client, no token stored yet."""
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    context.set_default_timeout(WAIT_MS)
    # Until the service serves its static files without a token, the page's own files (not
    # the API, whose calls must carry the token the page sends itself) get it here.
    context.route(STATIC_FILES, lambda route: route.continue_(headers={**route.request.headers, **AUTH}))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/")
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


# --- helpers ----------------------------------------------------------------------------------


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


def session_info(server: str, session_id: str) -> httpx.Response:
    return httpx.get(f"{server}/sessions/{session_id}", headers=AUTH, timeout=10)


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
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / size[0], box["y"] + (y + 0.5) * box["height"] / size[1])


# --- tests ------------------------------------------------------------------------------------


def _rle_cases() -> list[dict]:
    rng = np.random.default_rng(7)
    cases = []
    for height, width in [(1, 1), (3, 5), (17, 9), (180, 320), (541, 963)]:
        yy, xx = np.mgrid[:height, :width]
        masks = {
            "empty": np.zeros((height, width), bool),
            "full": np.ones((height, width), bool),
            "noise": rng.random((height, width)) < 0.4,
            "disc": (yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (min(height, width) / 3) ** 2,
            "last_pixel": (yy == height - 1) & (xx == width - 1),
            "stripes": (xx // 7 + yy // 3) % 2 == 0,
        }
        for name, mask in masks.items():
            rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
            column_major = mask.T.ravel()
            edges = np.flatnonzero(np.diff(column_major.astype(np.int8))) + 1
            bounds = np.concatenate([[0], edges, [column_major.size]])
            runs = np.diff(bounds).tolist()
            if column_major[0]:
                runs = [0, *runs]  # pycocotools' runs start with zeros
            cases.append(
                {
                    "name": f"{name} {height}x{width}",
                    "size": rle["size"],
                    "counts": rle["counts"].decode(),
                    "runs": runs,
                    "ones": np.flatnonzero(mask.ravel()).tolist(),
                }
            )
    return cases


def test_rle_codec_and_colours_match_python(page):
    cases = _rle_cases()
    results = page.evaluate(
        """async (cases) => {
            const rle = await import("/rle.js");
            const overlay = await import("/overlay.js");
            const decoded = cases.map((c) => {
                const mask = rle.decodeRle({ size: c.size, counts: c.counts });
                const ones = [];
                mask.data.forEach((v, i) => { if (v) ones.push(i); });
                return {
                    runs: rle.decodeCounts(c.counts),
                    ones,
                    area: mask.area,
                    shape: [mask.height, mask.width],
                    reencoded: rle.encodeMask(mask.data, mask.height, mask.width).counts,
                };
            });
            const colours = [];
            for (let id = 0; id < 64; id += 1) colours.push(overlay.objectColor(id));
            let malformed = null;
            try { rle.decodeRle({ size: [2, 2], counts: "5" }); } catch (e) { malformed = e.message; }
            return { decoded, colours, malformed };
        }""",
        cases,
    )
    for case, got in zip(cases, results["decoded"]):
        assert got["runs"] == case["runs"], case["name"]
        assert got["shape"] == case["size"], case["name"]
        assert got["ones"] == case["ones"], case["name"]
        assert got["area"] == len(case["ones"]), case["name"]
        assert got["reencoded"] == case["counts"], case["name"]
    assert results["colours"] == [list(object_color(i)) for i in range(64)]
    assert results["malformed"] is not None, "runs that do not cover the mask are an error"


def test_camera_click_segment_and_remove(page, server, tmp_path):
    # The token is entered once; the page keeps it and sends it itself from then on.
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    assert page.evaluate("() => localStorage.getItem('sam2-stream.token')") == TOKEN

    page.click("#start-camera")
    wait_for(page, "s.rtc === 'connected' && s.socket === 'open' && s.framesReceived >= 2")
    first = summary(page)
    assert first["frameSize"] == list(CLIP_SIZE)
    sid = first["sessionId"]
    info = session_info(server, sid).json()
    assert info["kind"] == "webrtc" and info["frames_captured"] > 0 and info["frames_processed"] > 0

    click_source_pixel(page, *CLICK)
    wait_for(page, "s.acks >= 1 && s.objects.length === 1 && s.displayed.length === 1")
    clicked = summary(page)
    [obj_id] = clicked["objects"]
    assert clicked["selected"] == obj_id and clicked["errors"] == 0

    # The mask is drawn at the click in the object's colour: filled at alpha 0.5 (128),
    # outlined at 255 (getImageData un-premultiplies, so allow a little rounding).
    patch = overlay_pixels(page, *CLICK, radius=6)
    painted = patch[..., 3] > 0
    colour_ok = np.abs(patch[..., :3] - np.array(object_color(obj_id))).max(axis=-1) <= 4
    assert painted.mean() > 0.5, f"only {painted.mean():.0%} of the click's neighbourhood is painted"
    assert (painted & colour_ok).sum() == painted.sum(), "painted pixels have the object's colour"
    assert set(np.unique(patch[..., 3][painted])) <= {127, 128, 255}

    # Tracking goes on: later frame messages carry the object, and the stats advance.
    wait_for(
        page,
        "s.frameIdx > arg.frameIdx + 1 && s.displayed.includes(arg.obj) && s.latency !== null",
        {"frameIdx": clicked["frameIdx"], "obj": obj_id},
    )
    wait_for(page, "document.getElementById('stat-processed-fps').textContent !== '-'")
    later = summary(page)
    assert later["framesReceived"] > first["framesReceived"] and later["reconnects"] == 0
    assert 0 < later["latency"] < 60
    stats = {
        name: page.text_content(f"#stat-{name}")
        for name in ("input-fps", "processed-fps", "dropped", "latency", "objects", "frames")
    }
    assert float(stats["input-fps"]) > 0 and float(stats["processed-fps"]) >= 0
    assert stats["latency"].endswith(")") and " ms" in stats["latency"]
    assert stats["objects"] == "1" and int(stats["frames"]) >= later["framesReceived"] - 1
    info = session_info(server, sid).json()
    assert info["obj_ids"] == [obj_id] and info["frames_processed"] > first["framesReceived"]

    shot = tmp_path / "browser.png"
    page.screenshot(path=str(shot))
    if os.environ.get("SAM2_STREAM_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "screenshot.png")

    # Remove it from the object list: gone from the page, the canvas and the server.
    page.click(f"#objects li[data-obj-id='{obj_id}'] .remove")
    wait_for(page, "s.objects.length === 0 && s.displayed.length === 0")
    frame_after = summary(page)["frameIdx"]
    wait_for(page, "s.frameIdx > arg", frame_after)
    assert summary(page)["displayed"] == []
    assert overlay_pixels(page, *CLICK, radius=6)[..., 3].max() == 0
    assert session_info(server, sid).json()["obj_ids"] == []

    # Stop deletes the session this page created.
    page.click("#stop")
    wait_for(page, "s.sessionId === null")
    assert session_info(server, sid).status_code == 404
