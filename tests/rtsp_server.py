"""Test helper: a real RTSP server (GStreamer's, from Debian) serving an mp4 on 127.0.0.1.

The file has two halves:

* Run as a script with Debian's `/usr/bin/python3`, which has the GStreamer bindings (the
  project's Python has not): `python3 rtsp_server.py CLIP.mp4 --port N` serves CLIP at
  `rtsp://127.0.0.1:N/clip` until killed, and prints `READY` once it listens.
  `python3 rtsp_server.py --check` exits 0 when everything it needs is installed.
* Imported by the tests: `RtspTestServer` starts, kills and restarts that script as a
  subprocess; `unavailable_reason()` says why the tests must be skipped (None when they can run).

Each client connection gets its own pipeline (not shared), so every client sees the clip from
its start and the stream ends when the clip does. The clip must be H.264 in mp4; it is sent
as recorded (no re-encoding), at its native rate.

Debian packages: gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

SYSTEM_PYTHON = "/usr/bin/python3"
MOUNT = "/clip"
# Elements the launch line uses; qtdemux and rtph264pay come from -good, h264parse from -bad.
_ELEMENTS = ("filesrc", "qtdemux", "h264parse", "rtph264pay")
_START_TIMEOUT_S = 30.0  # the first GStreamer start scans its plugins (seconds)


# --- server side (Debian's python3 with GStreamer) -------------------------------------------


def _import_gstreamer():
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    return GLib, Gst, GstRtspServer


def _check() -> int:
    try:
        _, gst, _ = _import_gstreamer()
    except (ImportError, ValueError) as exc:
        print(f"GStreamer RTSP server bindings missing: {exc}", file=sys.stderr)
        return 1
    missing = [name for name in _ELEMENTS if gst.ElementFactory.find(name) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _serve(clip: Path, port: int) -> int:
    glib, _, rtsp = _import_gstreamer()
    server = rtsp.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = rtsp.RTSPMediaFactory()
    # config-interval=-1 repeats SPS/PPS before every key frame, so a client can join anywhere.
    factory.set_launch(
        f'( filesrc location="{clip}" ! qtdemux ! h264parse '
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print("READY", flush=True)
    glib.MainLoop().run()
    return 0


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path, nargs="?")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--check", action="store_true", help="only check the installation")
    args = parser.parse_args()
    if args.check:
        return _check()
    if args.clip is None or not args.clip.is_file():
        parser.error("CLIP must be an existing mp4 file")
    return _serve(args.clip.resolve(), args.port)


# --- test side (the project's python) ---------------------------------------------------------


def _system_env() -> dict[str, str]:
    """The environment minus anything that would point Debian's python at the project's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYENV"))}


def unavailable_reason() -> str | None:
    """Why the RTSP server cannot run here (None when it can)."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found (GStreamer's RTSP server runs with Debian's python3)"
    check = subprocess.run(
        [SYSTEM_PYTHON, __file__, "--check"],
        capture_output=True,
        text=True,
        env=_system_env(),
        timeout=60,
        check=False,
    )
    if check.returncode != 0:
        return (
            "GStreamer's RTSP server is not installed "
            f"({check.stderr.strip() or 'check failed'}); see tests/rtsp_server.py"
        )
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspTestServer:
    """An RTSP server subprocess serving `clip` at `url`; the port stays the same on restart.

    Use as a context manager (the server is killed on exit) or call `start()` / `kill()`.
    """

    def __init__(self, clip: Path, *, port: int | None = None) -> None:
        self.clip = Path(clip)
        self.port = port or free_port()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Start serving; returns once the server listens. Raises RuntimeError if it does not."""
        if self.running:
            raise RuntimeError("RTSP test server already running")
        self._process = subprocess.Popen(
            [SYSTEM_PYTHON, __file__, str(self.clip), "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_system_env(),
        )
        if not self._wait_ready(timeout):
            _, stderr = self._stop_process()
            raise RuntimeError(f"RTSP test server did not start: {stderr.strip()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        process = self._process
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(remaining):
                    continue
                line = process.stdout.readline()
                if line.strip() == "READY":
                    return True
                if not line:  # the process exited
                    return False
        return False

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash or a network cut would."""
        self._stop_process()

    def _stop_process(self) -> tuple[str, str]:
        process, self._process = self._process, None
        if process is None:
            return "", ""
        if process.poll() is None:
            process.kill()
        return process.communicate(timeout=10)

    def restart(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Start again on the same port (after `kill`)."""
        self.kill()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


if __name__ == "__main__":
    sys.exit(_main())
