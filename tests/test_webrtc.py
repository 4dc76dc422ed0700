"""WebRTC in/out with real peers: an aiortc client against `sam2-stream serve` (subprocess, micro
model, CPU) on 127.0.0.1.

The client sends a clip made from bedroom.mp4 with PyAV, prompts on the "masklets" data channel,
and checks the overlay video (tinted where the mask is, pts aligned with the masklets) and the
masklet messages; closing either side frees the server's peer. ICE is restricted to loopback on
both sides, so the module also runs inside a loopback-only network namespace
(`unshare -n sh -c 'ip link set lo up; python -m pytest -q tests/test_webrtc.py'`).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

import av
import cv2
import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from coco_rle import decode_rle
from conftest import DATA
from serve_process import running_server
from waiting import poll_async

from streamer.overlay import object_color
from streamer.webrtc.media import configure_ice_hosts

# pycocotools' decode trips numpy 2's `__array__(copy=...)` deprecation on every call.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

TOKEN = "webrtc-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIP_FRAMES = 30
CLIP_SIZE = (320, 180)  # width, height
FRAME_PTS_STEP = 3000  # aiortc's VideoStreamTrack: 30 fps on the 90 kHz RTP clock
TIMEOUT = 30.0  # one frame of the micro model takes 0.1-0.8 s on 2 busy cores
# A peer hears of the other side's close from a few UDP datagrams (RTCP BYE, DTLS close); when
# a busy machine drops them, ICE consent expiry (about 30 s) still ends the connection.
CLOSE_TIMEOUT = 45.0


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def loopback_ice():
    """The client peers of this process gather candidates on 127.0.0.1 only, as the server."""
    configure_ice_hosts(["127.0.0.1"])
    yield
    configure_ice_hosts([])


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    """The first 30 frames of bedroom.mp4 at 320x180, (H, W, 3) uint8 RGB."""
    frames = []
    with av.open(str(DATA / "bedroom.mp4")) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(image, CLIP_SIZE, interpolation=cv2.INTER_AREA))
            if len(frames) == CLIP_FRAMES:
                break
    return frames


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL of a running `sam2-stream serve` with a token and loopback ICE (bounded start)."""
    env = {
        "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
        "SAM2_STREAM_MAX_OBJECTS_PER_SESSION": "2",
    }
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log_path, TOKEN, env, ready_timeout=120.0) as base:
        yield base


# --- helpers ----------------------------------------------------------------------------------


def run(coro, timeout: float = 120.0):
    """Run an async test body with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def create_session(base: str, **body) -> dict:
    response = httpx.post(f"{base}/sessions", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


async def get_json(client: httpx.AsyncClient, url: str) -> dict:
    response = await client.get(url, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def clip_position(index: int, length: int) -> int:
    """Frame of a clip played back and forth (no jump when it loops): 0, 1, .., n-1, n-2, .."""
    period = 2 * length - 2
    position = index % period
    return position if position < length else period - position


def sent_frame(frames: list[np.ndarray], pts: int) -> np.ndarray:
    """The clip frame `ClipTrack` sent with `pts` (the server keeps the sender's pts)."""
    return frames[clip_position(round(pts / FRAME_PTS_STEP), len(frames))]


class ClipTrack(VideoStreamTrack):
    """Plays `frames` back and forth as a live camera would (30 fps, pts i * 3000 at 90 kHz)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__()
        self.frames = frames
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self.frames[clip_position(self.sent, len(self.frames))]
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


class Client:
    """An aiortc peer: optional clip sender, overlay receiver and "masklets" data channel."""

    def __init__(
        self,
        *,
        frames: list[np.ndarray] | None,
        receive_video: bool = True,
        data_channel: bool = True,
    ) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        self.video: deque[tuple[int, np.ndarray]] = deque(maxlen=120)  # (pts, RGB)
        self.video_frames = 0
        self.video_arrived = asyncio.Event()
        self.channel = self.pc.createDataChannel("masklets") if data_channel else None
        if self.channel is not None:
            self.channel.on("message", lambda data: self.messages.put_nowait(json.loads(data)))
        if frames is not None:
            direction = "sendrecv" if receive_video else "sendonly"
            self.pc.addTransceiver(ClipTrack(frames), direction=direction)
        elif receive_video:
            self.pc.addTransceiver("video", direction="recvonly")
        self._readers: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        async def read() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                self.video.append((frame.pts, frame.to_ndarray(format="rgb24")))
                self.video_frames += 1
                self.video_arrived.set()

        self._readers.append(asyncio.ensure_future(read()))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def connect(self, http: httpx.AsyncClient, base: str, session_id: str) -> dict:
        """Offer/answer through POST /sessions/{id}/webrtc/offer; returns the answer body."""
        response = await http.post(
            f"{base}/sessions/{session_id}/webrtc/offer",
            json={"sdp": await self.offer(), "type": "offer"},
            headers=AUTH,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["type"] == "answer" and answer["peer_id"]
        await self.accept(answer["sdp"])
        return answer

    async def next_message(self, kind: str, timeout: float = TIMEOUT) -> dict:
        """The next data channel message of type `kind`, skipping frame messages."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), timeout)
            if message["type"] == kind:
                return message
            assert message["type"] == "frame", message

    def send(self, **message) -> None:
        self.channel.send(json.dumps({"v": 1, **message}))

    async def close(self) -> None:
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


# --- tests ------------------------------------------------------------------------------------


def test_publish_prompt_on_data_channel_receive_overlay_and_masklets(server, clip_frames):
    session = create_session(server, source="webrtc")
    sid = session["id"]
    peers_url = f"{server}/sessions/{sid}/webrtc"

    async def body():
        client = Client(frames=clip_frames)
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await client.connect(http, server, sid)
            hello = await client.next_message("hello")
            assert hello["session_id"] == sid and hello["source"] == "webrtc"

            # Frames flow through inference before any prompt: empty masklets.
            first = await client.next_message("frame")
            assert first["objects"] == [] and (first["width"], first["height"]) == CLIP_SIZE
            assert first["time_base"] == "1/90000"
            await asyncio.wait_for(client.video_arrived.wait(), TIMEOUT)
            pts, image = client.video[0]
            assert image.shape == (180, 320, 3)
            untinted = np.abs(image.astype(int) - sent_frame(clip_frames, pts)).mean()
            assert untinted < 12, "no objects yet: the overlay is the input frame (lossy codec)"

            client.send(type="add_points", id="click", points=[[160, 100]], labels=[1])
            ack = await client.next_message("ack")
            assert ack["id"] == "click" and ack["obj_id"] is not None
            obj_id = ack["obj_id"]

            # Masklets of the object, until the overlay video shows a frame tracked frames lead
            # up to, and shares three pts with masklet messages (bounded by `run`'s timeout).
            tracked: dict[int, dict] = {}
            while True:
                message = await client.next_message("frame")
                if message["objects"] and message["objects"][0]["area"] > 0:
                    tracked[message["pts"]] = message
                shown = {p for p, _ in client.video}
                if (
                    len(tracked) >= 6
                    and len(shown & set(tracked)) >= 3
                    and max(shown) > sorted(tracked)[2]
                ):
                    break
            video = list(client.video)

            async def ten_overlay_frames() -> bool:
                return client.video_frames >= 10

            await poll_async(ten_overlay_frames, TIMEOUT, "ten overlay frames")

            # Output options work on the data channel as on the websocket.
            client.send(type="set_options", id="opts", mask_downscale=2)
            options_ack = await client.next_message("ack")
            assert options_ack["id"] == "opts" and options_ack["request"] == "set_options"
            # (a frame encoded just before the change may still be on its way)
            for _ in range(3):
                halved = await client.next_message("frame")
                if halved["mask_downscale"] == 2:
                    break
            assert halved["mask_downscale"] == 2
            assert halved["objects"][0]["rle"]["size"] == [90, 160]

            peers = (await get_json(http, peers_url))["peers"]
            assert [p["id"] for p in peers] == [answer["peer_id"]]
            [peer] = peers
            assert peer["publishing"] and peer["data_channel"]
            assert peer["connection_state"] == "connected"
            assert peer["frames_pushed"] > 0 and peer["frames_sent"] > 0
            assert peer["messages_sent"] >= len(tracked)

            await client.close()
            # Closing the client frees the server's peer; the session stays, without subscriber.
            await poll_async(lambda: _no_peers(http, peers_url), CLOSE_TIMEOUT, "no peers")
            state = await get_json(http, f"{server}/sessions/{sid}")
            return obj_id, tracked, video, client.video_frames, state

    obj_id, tracked, video, video_frames, state = run(body())
    assert all([o["obj_id"] for o in m["objects"]] == [obj_id] for m in tracked.values())
    assert video_frames >= 10
    # Overlay frames keep the input's pts: the same clock as the masklet messages. Each frame
    # has its own pts (strictly increasing), and several overlay frames share theirs with a
    # masklet message.
    shown_pts = [p for p, _ in video]
    assert all(a < b for a, b in zip(shown_pts, shown_pts[1:])), shown_pts
    assert len(set(shown_pts) & set(tracked)) >= 3

    # An overlay frame is tinted in the object's colour where the object is. The overlay draws
    # the latest result when a frame arrives, i.e. the mask of one of the last few processed
    # frames before it: compare inside all of those masks and outside any of them.
    alpha = 0.5  # OverlayStyle's default
    kernel = np.ones((5, 5), np.uint8)
    checked = 0
    for pts, overlay in reversed(video):
        recent = [decode_rle(tracked[p]["objects"][0]["rle"]) for p in sorted(tracked) if p < pts]
        if len(recent) < 3:
            continue
        recent = np.stack(recent[-3:]).astype(np.uint8)  # (3, H, W)
        inside = cv2.erode(recent.min(axis=0), kernel).astype(bool)
        outside = ~cv2.dilate(recent.max(axis=0), kernel).astype(bool)
        if inside.sum() < 100:
            continue  # the object moved too much between those frames
        sent = sent_frame(clip_frames, pts).astype(np.float64)
        change = overlay.astype(np.float64) - sent  # (H, W, 3)
        toward = np.array(object_color(obj_id)) - sent[inside]  # (N, 3): full-strength shift
        assert np.abs(toward.mean(axis=0)).max() > 50, "the colour differs enough from the scene"
        # The blend's strength, least squares over the pixels inside: change = a * toward.
        strength = float((change[inside] * toward).sum() / (toward * toward).sum())
        assert abs(strength - alpha) < 0.1, f"overlay strength {strength:.2f}, want {alpha}"
        assert np.abs(change[outside]).mean() < 12, "untouched outside the mask (lossy codec)"
        checked += 1
    assert checked >= 1

    assert state["state"] == "running" and state["subscribers"] == 0
    httpx.delete(f"{server}/sessions/{state['id']}", headers=AUTH, timeout=20)


async def _no_peers(http: httpx.AsyncClient, url: str) -> bool:
    return (await get_json(http, url))["peers"] == []


def test_viewer_of_a_file_session_gets_overlay_and_end(server, tmp_path, clip_frames):
    """No video sent: the overlay shows the session's processed frames, the channel its end."""
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = *CLIP_SIZE, "yuv420p"
        for image in clip_frames[:6]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    session = create_session(server, source=str(path))  # starts when the viewer subscribes

    async def body():
        client = Client(frames=None)
        async with httpx.AsyncClient(timeout=10) as http:
            await client.connect(http, server, session["id"])
            await client.next_message("hello")
            frames = []
            while (message := await asyncio.wait_for(client.messages.get(), TIMEOUT))[
                "type"
            ] != "end":
                assert message["type"] == "frame", message
                frames.append(message)
            await asyncio.wait_for(client.video_arrived.wait(), TIMEOUT)
            [peer] = (await get_json(http, f"{server}/sessions/{session['id']}/webrtc"))["peers"]
            await client.close()
            return frames, message, peer, client.video_frames

    frames, end, peer, video_frames = run(body())
    assert [f["frame_idx"] for f in frames] == list(range(6)), "a batch source: every frame"
    assert end["state"] == "finished" and end["frames"] == 6
    assert not peer["publishing"] and peer["frames_sent"] >= 1 and video_frames >= 1
    httpx.delete(f"{server}/sessions/{session['id']}", headers=AUTH, timeout=20)


def test_deleting_the_session_closes_its_peer(server, clip_frames):
    session = create_session(server, source="webrtc")

    async def body():
        client = Client(frames=clip_frames)
        closed = asyncio.Event()

        @client.pc.on("connectionstatechange")
        def _changed() -> None:
            if client.pc.connectionState in ("closed", "failed"):
                closed.set()

        async with httpx.AsyncClient(timeout=20) as http:
            await client.connect(http, server, session["id"])
            await client.next_message("hello")
            await client.next_message("frame")  # media flows
            response = await http.delete(f"{server}/sessions/{session['id']}", headers=AUTH)
            assert response.status_code == 204
            end = await client.next_message("end")
            await asyncio.wait_for(closed.wait(), CLOSE_TIMEOUT)
            missing = await http.get(f"{server}/sessions/{session['id']}/webrtc", headers=AUTH)
            await client.close()
            return end, missing

    end, missing = run(body())
    assert end["state"] == "closed"
    assert missing.status_code == 404


def test_offers_the_session_cannot_take_are_refused(server, clip_frames):
    file_session = create_session(server, source=str(DATA / "bedroom.mp4"), max_frames=1)
    live = create_session(server, source="webrtc")

    async def offer_sdp(frames) -> str:
        client = Client(frames=frames)
        try:
            return await client.offer()
        finally:
            await client.close()

    async def body():
        async with httpx.AsyncClient(timeout=20) as http:

            async def post(session_id: str, body, headers=AUTH) -> httpx.Response:
                url = f"{server}/sessions/{session_id}/webrtc/offer"
                return await http.post(url, json=body, headers=headers)

            sending = {"sdp": await offer_sdp(clip_frames), "type": "offer"}
            results = {
                # Video sent to a file session has nowhere to go.
                "file": await post(file_session["id"], sending),
                "garbage": await post(live["id"], {"sdp": "v=0 nonsense", "type": "offer"}),
                "answer_type": await post(live["id"], {**sending, "type": "answer"}),
                "unknown": await post("nope", sending),
                "no_token": await post(live["id"], sending, headers={}),
            }
            # A first publisher is taken, a second one is refused while it is connected.
            first = Client(frames=clip_frames)
            await first.connect(http, server, live["id"])
            results["second"] = await post(live["id"], {"sdp": await offer_sdp(clip_frames)})
            peers = (await get_json(http, f"{server}/sessions/{live['id']}/webrtc"))["peers"]
            await first.close()
            return results, peers

    results, peers = run(body())
    assert results["file"].status_code == 409 and results["file"].json()["code"] == "conflict"
    assert results["garbage"].status_code == 400
    assert results["garbage"].json()["code"] == "bad_offer"
    assert results["answer_type"].status_code == 400
    assert results["unknown"].status_code == 404
    assert results["no_token"].status_code == 401
    assert results["second"].status_code == 409
    assert len(peers) == 1 and peers[0]["publishing"], "refused offers leave no peer behind"
    for session in (file_session, live):
        httpx.delete(f"{server}/sessions/{session['id']}", headers=AUTH, timeout=20)
