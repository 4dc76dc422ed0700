"""HTTPS and the API docs, in Debian's Chromium (headless, Playwright):

- the service over TLS (a self-signed certificate for 127.0.0.1): the camera page publishes,
  a click segments, masklets come back, as in tests/test_browser.py over plain HTTP;
- `/docs` renders the OpenAPI 3.1 document with Swagger UI 5 and lists the operations;
- a page opened over plain HTTP from another host says that the camera needs HTTPS.

Every wait is bounded; the servers run in threads of this process on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn
from certificates import self_signed
from conftest import MICRO_CHECKPOINT
from waiting import poll

from streamer.service.app import create_app
from streamer.service.startup import startup_line
from streamer.settings import Settings
from streamer.webrtc.media import configure_ice_hosts

sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright")
import test_browser  # noqa: E402
from browser_page import WAIT_MS, click_source_pixel, summary, wait_for  # noqa: E402
from test_browser import CHROMIUM, CHROMIUM_FLAGS, CLICK, CLIP_SIZE, _free_port  # noqa: E402

camera_clip = test_browser.camera_clip  # the fake camera's MJPEG clip fixture, used by name

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
)

TOKEN = "https-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The operator's token (lists and reads any session); the page holds only the service token,
# so it must drive the sessions it opens with their own tokens (docs/protocol.md).
ADMIN_AUTH = {"Authorization": "Bearer https-test-admin-token"}
STATIC = Path(__file__).resolve().parents[1] / "streamer" / "static"


@pytest.fixture(scope="module")
def tls_service(micro_model, tmp_path_factory):
    """(https base URL, app): the service under uvicorn with TLS; bounded start and stop."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    port = _free_port()
    settings = Settings(
        model="sam2.1_micro",
        checkpoint=MICRO_CHECKPOINT,
        device="cpu",
        auth_token=TOKEN,
        admin_token="https-test-admin-token",
        ice_hosts=["127.0.0.1"],
        port=port,
        tls_cert=cert,
        tls_key=key,
    )
    app = create_app(settings, model=micro_model)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ssl_certfile=cert, ssl_keyfile=key
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-tls", daemon=True)
    thread.start()
    base = f"https://127.0.0.1:{port}"
    try:
        poll(lambda: server.started or not thread.is_alive(), 60, "the TLS server to start")
        assert server.started, "the TLS server's thread ended before it started"
        trust = ssl.create_default_context(cafile=str(cert))
        ready = httpx.get(f"{base}/readyz", headers=AUTH, timeout=10, verify=trust)
        assert ready.status_code == 200
        yield base, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        configure_ice_hosts([])


@pytest.fixture(scope="module")
def browser(camera_clip):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                *CHROMIUM_FLAGS,
                f"--use-file-for-fake-video-capture={camera_clip}",
                # "lan.test" is 127.0.0.1 to Chromium, but not localhost: not a secure origin.
                "--host-resolver-rules=MAP lan.test 127.0.0.1",
            ],
            timeout=60_000,
        )
        try:
            yield browser
        finally:
            browser.close()


def _context(browser, **options):
    context = browser.new_context(
        viewport={"width": 1280, "height": 760}, ignore_https_errors=True, **options
    )
    context.set_default_timeout(WAIT_MS)
    return context


def test_startup_line_names_the_https_url(tls_service) -> None:
    base, app = tls_service
    line = startup_line(app.state.settings, app.state.manager)
    assert line.startswith("ready: model sam2.1_micro (checkpoint ")
    assert "on cpu:0, float32, compiled: no" in line and line.endswith(f"at {base}/")


def test_camera_over_https(tls_service, browser) -> None:
    base, _ = tls_service
    context = _context(browser)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/")
        assert page.evaluate("() => window.isSecureContext && location.protocol") == "https:"
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.click("#start-camera")
        wait_for(page, "s.rtc === 'connected' && s.socket === 'open' && s.framesReceived >= 2")
        assert summary(page)["frameSize"] == list(CLIP_SIZE)
        click_source_pixel(page, *CLICK)
        wait_for(page, "s.objects.length === 1 && s.displayed.length === 1")
        clicked = summary(page)
        wait_for(
            page,
            "s.frameIdx > arg.frameIdx + 1 && s.displayed.includes(arg.obj)",
            {"frameIdx": clicked["frameIdx"], "obj": clicked["objects"][0]},
        )
        assert clicked["errors"] == 0
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def test_docs_render_the_operations(tls_service, browser) -> None:
    base, app = tls_service
    context = _context(browser, extra_http_headers=AUTH)
    try:
        page = context.new_page()
        page.goto(f"{base}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=WAIT_MS)
        body = page.inner_text("body")
        paths = page.eval_on_selector_all(
            ".opblock-summary-path", "nodes => nodes.map(n => n.getAttribute('data-path'))"
        )
        methods = page.eval_on_selector_all(
            ".opblock-summary-method", "nodes => nodes.map(n => n.textContent)"
        )
    finally:
        context.close()
    assert "Unable to render this definition" not in body
    assert app.openapi()["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert set(zip(methods, paths, strict=True)) == documented
    assert ("POST", "/sessions") in documented and ("POST", "/whip") in documented


class _StaticPage(http.server.SimpleHTTPRequestHandler):
    """The web page's files, and an empty session list (all a page needs to start)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(STATIC), **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/sessions"):
            body = json.dumps({"sessions": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):  # quiet
        pass


def test_page_says_the_camera_needs_https(browser) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StaticPage)
    thread = threading.Thread(target=server.serve_forever, name="static", daemon=True)
    thread.start()
    context = _context(browser)
    try:
        page = context.new_page()
        page.goto(f"http://lan.test:{server.server_address[1]}/")
        assert page.evaluate("() => window.isSecureContext") is False
        page.wait_for_function(
            "() => document.getElementById('message').textContent.includes('needs HTTPS')",
            timeout=WAIT_MS,
        )
        page.click("#start-camera")
        message = page.text_content("#message")
    finally:
        context.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert "The camera needs HTTPS" in message and "--tls-cert" in message


def test_serve_refuses_a_bad_tls_pair_before_loading_the_model(tmp_path: Path, capsys) -> None:
    from streamer.cli import EXIT_BAD_INPUT, main

    cert, _ = self_signed(tmp_path)
    assert main(["serve", "--tls-cert", str(cert)]) == EXIT_BAD_INPUT
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    assert main(["serve", "--tls-cert", str(cert), "--tls-key", str(cert)]) == EXIT_BAD_INPUT
    assert "cannot use" in capsys.readouterr().err


def test_page_opens_a_file_source(tls_service, browser) -> None:
    """The page's "Open" form: a video file on the server, watched and clicked like a camera."""
    base, _ = tls_service
    clip = Path(__file__).parent / "data" / "bedroom.mp4"
    context = _context(browser)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/")
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.fill("#source-input", str(clip))
        page.click("#open-source")
        wait_for(page, "s.sessionId !== null && s.socket === 'open' && s.frameIdx >= 1")
        session_id = summary(page)["sessionId"]
        click_source_pixel(page, *CLICK)
        wait_for(page, "s.objects.length === 1")
        trust = ssl.create_default_context(cafile=str(tls_service[1].state.settings.tls_cert))
        url = f"{base}/sessions/{session_id}"
        info = httpx.get(url, headers=ADMIN_AUTH, timeout=10, verify=trust).json()
    finally:
        context.close()  # the page deletes the session it opened
    assert info["source"] == str(clip) and info["kind"] == "file"
    assert errors == [], f"uncaught errors in the page: {errors}"
