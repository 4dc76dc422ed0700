"""Test helper: a WHIP publisher built on GStreamer's `webrtcbin` (Debian's), as OBS-style and
`whipclientsink` publishers are, with webrtcbin's default (RSA) DTLS certificate.

* Run as a script with Debian's `/usr/bin/python3` (it has the GStreamer bindings; the
  project's Python has not):
  `python3 gst_whip_publisher.py CLIP URL --token T --seconds S --ice-host 127.0.0.1`
  decodes CLIP, encodes it as VP8 at 320x180, publishes it to the WHIP endpoint URL for S
  seconds (or until the clip ends), prints `SESSION <id>` once the server answered and
  `CONNECTED` once ICE and DTLS are up, then DELETEs its WHIP resource and exits 0. It exits 1
  with the reason on stderr when the publication fails (HTTP error, ICE/DTLS failure, timeout).
  `python3 gst_whip_publisher.py --check` exits 0 when everything it needs is installed.
* Imported by the tests: `unavailable_reason()` says why the tests must be skipped (None when
  they can run); `SYSTEM_PYTHON` and `SCRIPT` build the command line.

Debian packages: python3-gi gir1.2-gst-plugins-bad-1.0 gstreamer1.0-nice
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).resolve()
_ELEMENTS = ("webrtcbin", "nicesrc", "dtlssrtpenc", "vp8enc", "rtpvp8pay", "decodebin")
_CONNECT_TIMEOUT_S = 30.0


def _import_gstreamer():
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC

    Gst.init(None)
    return GLib, Gst, GstSdp, GstWebRTC


def _check() -> int:
    try:
        _, gst, _, _ = _import_gstreamer()
    except (ImportError, ValueError) as exc:
        print(f"GStreamer WebRTC bindings missing: {exc}", file=sys.stderr)
        return 1
    missing = [name for name in _ELEMENTS if gst.ElementFactory.find(name) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _publish(clip: str, url: str, token: str | None, seconds: float, ice_host: str | None) -> int:
    GLib, Gst, GstSdp, GstWebRTC = _import_gstreamer()
    pipeline = Gst.parse_launch(
        f'filesrc location="{clip}" ! decodebin ! videoconvert ! videoscale '
        "! video/x-raw,width=320,height=180,format=I420 ! identity sync=true "
        "! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay "
        "! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 "
        "! webrtcbin name=send bundle-policy=max-bundle"
    )
    webrtc = pipeline.get_by_name("send")
    if ice_host:
        # libnice gathers on every interface but loopback; the server here listens on it.
        agent = webrtc.get_property("ice-agent")
        agent.ref()  # gi's property getter releases a reference webrtcbin still needs
        agent.emit("add-local-ip-address", ice_host)
    loop = GLib.MainLoop()
    state = {"location": None, "error": None, "connected": False}
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def fail(reason: str) -> None:
        if state["error"] is None:
            state["error"] = reason
        loop.quit()

    def post_offer() -> bool:
        offer = webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(url, data=offer.encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                answer = response.read().decode()
                location = response.headers["Location"]
                state["location"] = urllib.request.urljoin(url, location)
                print(f"SESSION {response.headers.get('X-Session-Id')}", flush=True)
        except urllib.error.URLError as exc:
            fail(f"WHIP POST failed: {exc}")
            return False
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", description, None)
        return False

    def on_gathering(element, _pspec) -> None:
        # No trickle ICE: the offer goes out with every candidate (as the server's answer).
        if (
            element.get_property("ice-gathering-state")
            == GstWebRTC.WebRTCICEGatheringState.COMPLETE
        ):
            GLib.idle_add(post_offer)

    def on_offer(promise, _element, _data) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, None)

    def on_negotiation_needed(element) -> None:
        promise = Gst.Promise.new_with_change_func(on_offer, element, None)
        element.emit("create-offer", None, promise)

    def on_connection_state(element, _pspec) -> None:
        value = element.get_property("connection-state")
        if value == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not state["connected"]:
            state["connected"] = True
            print("CONNECTED", flush=True)
            GLib.timeout_add(int(seconds * 1000), loop.quit)
        elif value == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            fail("peer connection failed (ICE or DTLS)")

    def on_message(_bus, message) -> None:
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            fail(f"GStreamer error: {error.message} ({debug})")
        elif message.type == Gst.MessageType.EOS:
            loop.quit()

    def on_timeout() -> bool:
        if not state["connected"]:
            fail(f"not connected after {_CONNECT_TIMEOUT_S} s")
        return False

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    webrtc.connect("notify::connection-state", on_connection_state)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    GLib.timeout_add(int(_CONNECT_TIMEOUT_S * 1000), on_timeout)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
        if state["location"]:
            request = urllib.request.Request(state["location"], method="DELETE", headers=headers)
            try:
                urllib.request.urlopen(request, timeout=10).close()
            except urllib.error.URLError:
                pass  # the server may have closed the resource already
    if state["error"]:
        print(state["error"], file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?")
    parser.add_argument("url", nargs="?")
    parser.add_argument("--token")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ice-host", help="gather ICE candidates on this address only")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        return _check()
    return _publish(args.clip, args.url, args.token, args.seconds, args.ice_host)


# --- test side (the project's Python) ---------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why GStreamer WHIP publishing cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} (Debian's, with python3-gi) is not installed"
    started = time.monotonic()
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return f"the GStreamer check did not finish in {time.monotonic() - started:.0f} s"
    if result.returncode != 0:
        return result.stderr.strip() or "the GStreamer check failed"
    return None


if __name__ == "__main__":
    sys.exit(main())
