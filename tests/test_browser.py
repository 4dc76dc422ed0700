"""The browser client (streamer/static/) in real headless Chromium against the service.

Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser is downloaded) gets a
fake camera that plays an MJPEG clip made from bedroom.mp4 (each frame carries its index as a
small bar code in its bottom-right corner) and publishes it over WebRTC to a "webrtc" session of
a uvicorn server on 127.0.0.1 (in this process: micro model, CPU, a token, ICE on loopback
only). The test clicks on the picture like a user. Checks: frames reach the server, masklets
reach the page, the clicked object's mask is drawn in the overlay canvas at the click, the page
shows the very camera frame the server computed those masks on (pts alignment), the stats
advance, prompts (negative click, box, hide, remove, reset), export, websocket reconnect; and
the in-browser COCO RLE codec agrees with pycocotools.

Runs inside a loopback-only network namespace too
(`unshare -n sh -c 'ip link set lo up; python -m pytest -q tests/test_browser.py'`).
A screenshot goes to the test's tmp_path; with SAM2_STREAM_UPDATE_SCREENSHOT=1 also to
docs/screenshot.png. Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from coco_rle import decode_rle
from conftest import DATA, MICRO_CHECKPOINT
from pycocotools import mask as mask_api

from streamer.overlay import object_color
from streamer.service.app import create_app
from streamer.settings import Settings
from streamer.webrtc.media import configure_ice_hosts

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs Playwright (pip install playwright)"
)
# After the check above: the page helpers import Playwright.
from browser_page import (  # noqa: E402
    WAIT_MS,
    click_source_pixel,
    colour_pixels,
    draw_bar_code,
    overlay_pixels,
    read_bar_code,
    shown_frame,
    summary,
    wait_for,
)

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "browser-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The test's own look-ups use the admin credential; the page has only the service token and
# the capability of the session it creates (issue 19).
ADMIN_AUTH = {"Authorization": "Bearer browser-test-admin"}
CLIP_SIZE = (320, 180)  # width, height
CLIP_FRAMES = 75  # 2.5 s at Chromium's 30 fps for MJPEG files (it loops the file)
FRAME_MS = 1000 / 30
CLICK = (200, 117)  # source pixels: the pink pillow on the bed
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
    """An MJPEG file (concatenated JPEG frames) of bedroom.mp4's first frames at 320x180, each
    with its index as a bar code; Chromium's fake camera loops it at 30 fps."""
    path = tmp_path_factory.mktemp("camera") / "bedroom.mjpeg"
    with av.open(str(DATA / "bedroom.mp4")) as container, path.open("wb") as out:
        for index, frame in enumerate(container.decode(video=0)):
            if index == CLIP_FRAMES:
                break
            image = cv2.resize(
                frame.to_ndarray(format="bgr24"), CLIP_SIZE, interpolation=cv2.INTER_AREA
            )
            draw_bar_code(image, index)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            out.write(jpeg.tobytes())
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service(micro_model):
    """(base URL, app) of the service under uvicorn on 127.0.0.1, in a thread of this process
    (so the test can watch the frames the server processes); bounded start and stop."""
    settings = Settings(
        model="sam2.1_micro",
        checkpoint=MICRO_CHECKPOINT,
        device="cpu",
        auth_token=TOKEN,
        admin_token="browser-test-admin",
        ice_hosts=["127.0.0.1"],
    )
    app = create_app(settings, model=micro_model)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the server did not start in 60 s")
            thread.join(timeout=0.1)  # the poll step
        assert httpx.get(f"{base}/readyz", headers=AUTH, timeout=10).status_code == 200
        yield base, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        configure_ice_hosts([])  # the app set loopback-only ICE for the whole process


@pytest.fixture(scope="module")
def server(service) -> str:
    return service[0]


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
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/")
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


# --- helpers ----------------------------------------------------------------------------------


def session_info(server: str, session_id: str) -> httpx.Response:
    return httpx.get(f"{server}/sessions/{session_id}", headers=ADMIN_AUTH, timeout=10)


# --- tests ------------------------------------------------------------------------------------


def _rle_cases() -> list[dict]:
    """pycocotools' RLE of assorted masks, with the runs and the mask bytes (base64) as strings
    (Playwright moves strings far faster than long arrays)."""
    rng = np.random.default_rng(7)
    cases = []
    for height, width in [(1, 1), (3, 5), (17, 9), (180, 320), (1080, 1920)]:
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
            if height * width > 1e6 and name in ("noise", "stripes"):
                continue  # long runs matter at this size, not many of them
            rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
            column_major = mask.T.ravel()
            edges = np.flatnonzero(np.diff(column_major.astype(np.int8))) + 1
            runs = np.diff(np.concatenate([[0], edges, [column_major.size]])).tolist()
            if column_major[0]:
                runs = [0, *runs]  # pycocotools' runs start with zeros
            cases.append(
                {
                    "name": f"{name} {height}x{width}",
                    "size": rle["size"],
                    "counts": rle["counts"].decode(),
                    "runs": ",".join(map(str, runs)),
                    "mask": base64.b64encode(mask.astype(np.uint8).tobytes()).decode(),
                    "area": int(mask.sum()),
                }
            )
    return cases


def test_rle_codec_and_colours_match_python(page):
    """The page's COCO RLE decoder/encoder (rle.js) against pycocotools, and its object colours
    (overlay.js) against the server's `object_color`."""
    cases = _rle_cases()
    results = page.evaluate(
        """async (cases) => {
            const rle = await import("/rle.js");
            const overlay = await import("/overlay.js");
            const base64 = (bytes) => {
                let text = "";
                for (let i = 0; i < bytes.length; i += 0x8000) {
                    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
                }
                return btoa(text);
            };
            const decoded = cases.map((c) => {
                const mask = rle.decodeRle({ size: c.size, counts: c.counts });
                return {
                    name: c.name,
                    runs: rle.decodeCounts(c.counts).join(",") === c.runs,
                    mask: base64(mask.data) === c.mask,
                    shape: [mask.height, mask.width],
                    area: mask.area,
                    reencoded:
                        rle.encodeMask(mask.data, mask.height, mask.width).counts === c.counts,
                };
            });
            const colours = [];
            for (let id = 0; id < 64; id += 1) colours.push(overlay.objectColor(id));
            let malformed = null;
            try {
                rle.decodeRle({ size: [2, 2], counts: "5" });
            } catch (e) {
                malformed = e.message;
            }
            return { decoded, colours, malformed };
        }""",
        cases,
    )
    for case, got in zip(cases, results["decoded"]):
        assert got == {
            "name": case["name"],
            "runs": True,
            "mask": True,
            "shape": case["size"],
            "area": case["area"],
            "reencoded": True,
        }
    assert results["colours"] == [list(object_color(i)) for i in range(64)]
    assert results["malformed"] is not None, "runs that do not cover the mask are an error"


def test_camera_click_segment_and_remove(page, service, tmp_path):
    server, app = service
    # The token is entered once; the page keeps it and sends it itself from then on.
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    assert page.evaluate("() => localStorage.getItem('sam2-stream.token')") == TOKEN

    page.click("#start-camera")
    wait_for(page, "s.rtc === 'connected' && s.socket === 'open' && s.framesReceived >= 2")
    first = summary(page)
    assert first["frameSize"] == list(CLIP_SIZE) and first["view"] == "sync"
    sid = first["sessionId"]
    info = session_info(server, sid).json()
    assert info["kind"] == "webrtc" and info["frames_captured"] > 0 and info["frames_processed"] > 0

    # A click segments the object under it; the ack's mask is drawn at once.
    click_source_pixel(page, *CLICK)
    wait_for(page, "s.objects.length === 1 && s.displayed.length === 1")
    clicked = summary(page)
    [obj_id] = clicked["objects"]
    assert clicked["selected"] == obj_id and clicked["errors"] == 0

    # Drawn at the click in the object's colour: filled at alpha 0.5 (128), outlined at 255
    # (getImageData un-premultiplies, so allow a little rounding).
    patch = overlay_pixels(page, *CLICK, radius=6)
    painted = patch[..., 3] > 0
    colour_ok = np.abs(patch[..., :3] - np.array(object_color(obj_id))).max(axis=-1) <= 4
    assert painted.mean() > 0.5, (
        f"only {painted.mean():.0%} of the click's neighbourhood is painted"
    )
    assert (painted & colour_ok).sum() == painted.sum(), "painted pixels have the object's colour"
    assert set(np.unique(patch[..., 3][painted])) <= {127, 128, 255}

    # Tracking goes on: later frame messages carry the object, and the stats advance.
    wait_for(
        page,
        "s.frameIdx > arg.frameIdx + 1 && s.displayed.includes(arg.obj) && s.latency !== null",
        {"frameIdx": clicked["frameIdx"], "obj": obj_id},
    )
    # Frames keep being processed, so the page's processed rate (from two polls of the
    # session's counters) turns positive.
    wait_for(page, "parseFloat(document.getElementById('stat-processed-fps').textContent) > 0")
    later = summary(page)
    assert later["framesReceived"] > first["framesReceived"] and later["reconnects"] == 0
    assert 0 < later["latency"] < 60
    # The stats panel is redrawn on its own timer: wait (bounded) until it has drawn the
    # frames counted above, then read the shown stats and the session info they came from.
    wait_for(
        page,
        "parseInt(document.getElementById('stat-frames').textContent) >= arg",
        later["framesReceived"],
    )
    shown = page.evaluate(
        """(names) => ({
            text: Object.fromEntries(
                names.map((n) => [n, document.getElementById(`stat-${n}`).textContent])
            ),
            rates: window.sam2stream.state.rates,
        })""",
        ["input-fps", "processed-fps", "dropped", "latency", "server-latency", "objects", "frames"],
    )
    stats, rates = shown["text"], shown["rates"]
    assert float(stats["input-fps"]) > 0 and float(stats["processed-fps"]) > 0
    assert stats["processed-fps"] == f"{rates['processed']:.1f}"
    # Dropped frames are the server's count at the page's last poll, which the server's count
    # now can only have grown from.
    polled = rates["lastInfo"]["info"]
    assert stats["dropped"] == str(polled["frames_dropped"])
    assert polled["frames_dropped"] <= session_info(server, sid).json()["frames_dropped"]
    assert stats["latency"].endswith(" ms") and stats["server-latency"].endswith(" ms")
    assert stats["objects"] == "1" and int(stats["frames"]) >= later["framesReceived"]
    info = session_info(server, sid).json()
    assert info["obj_ids"] == [obj_id] and info["frames_processed"] >= later["framesReceived"]

    # Alignment: the synced view shows the camera frame the server computed the shown masks on
    # (the bar code of the page's frame against that of the server's frame with the masklets'
    # pts). The page can only show frames the browser presented in its camera preview; on a
    # starved CPU it skips some, and then a neighbour stands in, so: exact for most samples,
    # never more than one frame off (without the pts clock's receiver-lag correction every
    # sample is one frame late). A sample whose page frame is older than the target by more
    # than half a frame interval is one the preview had not presented yet when the masks came
    # (the server can answer faster than Chromium's preview on these 2 cores): it says nothing
    # about the alignment, so it is set aside and another sample is taken.
    processed: dict[int, int] = {}  # pts -> bar code, filled on the server's worker thread

    def on_result(frame, result) -> None:
        processed[frame.pts] = read_bar_code(frame.image)

    session = app.state.manager.get(sid)
    session.add_result_listener(on_result)
    try:
        samples = []  # (server's bar code, page's bar code, page frame time - target in ms)
        # Up to 48 frames (about 2 s): when the server answers within a frame of the camera,
        # most samples are set aside and the usable ones come from the preview's jitter.
        for _ in range(48):
            if sum(offset >= -FRAME_MS / 2 for _, _, offset in samples) >= 8:
                break
            wait_for(
                page,
                "s.shownFrameIdx === s.frameIdx && s.frameIdx > arg",
                summary(page)["frameIdx"],
            )
            shown, image = shown_frame(page)
            samples.append(
                (processed.get(shown["pts"]), read_bar_code(image), round(shown["offsetMs"], 1))
            )
    finally:
        session.remove_result_listener(on_result)
    off_by = [
        (page_code - server_code) % CLIP_FRAMES
        for server_code, page_code, offset in samples
        if server_code is not None and offset >= -FRAME_MS / 2
    ]
    assert len(off_by) >= 5, samples
    assert all(d in (0, 1, CLIP_FRAMES - 1) for d in off_by), samples
    assert off_by.count(0) > len(off_by) / 2, samples

    # A right-click is a negative point for the selected object.
    box = page.locator("#prompt-layer").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.2, button="right")
    wait_for(page, "s.lastPromptAck && s.lastPromptAck.id === s.lastPrompt.id")
    negative = summary(page)
    assert negative["lastPrompt"]["type"] == "add_points" and negative["lastPrompt"]["labels"] == [
        0
    ]
    assert negative["lastPromptAck"]["obj_id"] == obj_id == negative["lastPrompt"]["obj_id"]
    assert negative["objects"] == [obj_id] and negative["errors"] == 0

    # The server-rendered overlay track plays in the fallback view.
    page.check("#server-view")
    page.wait_for_function(
        "() => { const v = document.getElementById('remote-video'); "
        "return v.videoWidth === 320 && v.currentTime > 0; }",
        timeout=WAIT_MS,
    )
    assert summary(page)["view"] == "remote"
    page.uncheck("#server-view")

    shot = tmp_path / "browser.png"
    page.screenshot(path=str(shot))
    if os.environ.get("SAM2_STREAM_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "screenshot.png")

    # Export: SA-V style JSON whose masks pycocotools reads.
    with page.expect_download(timeout=WAIT_MS) as download:
        page.click("#export")
    sav = json.loads(Path(download.value.path()).read_text())
    assert sav["video_id"] == sid and sav["masklet_id"] == [obj_id] and sav["masklet_num"] == 1
    assert sav["masklet_type"] == ["manual"] and sav["masklet_edited_frame_count"][0] >= 1
    assert sav["video_frame_count"] == len(sav["masklet"]) >= 3
    assert (sav["video_width"], sav["video_height"]) == CLIP_SIZE
    last = decode_rle(sav["masklet"][-1][0])
    assert last.shape == (CLIP_SIZE[1], CLIP_SIZE[0])

    # A box dragged after "New object" makes a second object; hiding it stops drawing it.
    page.click("#new-object")
    start = (box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.15)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + box["width"] * 0.2, start[1] + box["height"] * 0.5, steps=5)
    page.mouse.up()
    wait_for(page, "s.objects.length === 2 && s.displayed.length === 2")
    second = next(i for i in summary(page)["objects"] if i != obj_id)
    assert summary(page)["selected"] == second
    page.click(f"#objects li[data-obj-id='{second}'] .hide")
    wait_for(page, "s.frameIdx > arg", summary(page)["frameIdx"])
    assert colour_pixels(page, second) == 0 and colour_pixels(page, obj_id) > 0

    # The websocket reconnects by itself after an abnormal close.
    page.evaluate("() => window.sam2stream.state.socket.ws.close(4000, 'test')")
    wait_for(page, "s.reconnects >= 1 && s.socket === 'open'")
    wait_for(page, "s.frameIdx > arg", summary(page)["frameIdx"])

    # Remove the clicked object from the list: gone from the page, the canvas and the server.
    page.click(f"#objects li[data-obj-id='{obj_id}'] .remove")
    wait_for(page, "s.objects.length === 1 && !s.displayed.includes(arg)", obj_id)
    wait_for(page, "s.frameIdx > arg", summary(page)["frameIdx"])
    assert obj_id not in summary(page)["displayed"] and colour_pixels(page, obj_id) == 0
    assert session_info(server, sid).json()["obj_ids"] == [second]

    # Reset forgets everything; Stop deletes the session this page created.
    page.click("#reset")
    wait_for(page, "s.objects.length === 0 && s.displayed.length === 0")
    assert session_info(server, sid).json()["obj_ids"] == []
    page.click("#stop")
    wait_for(page, "s.sessionId === null")
    assert session_info(server, sid).status_code == 404
