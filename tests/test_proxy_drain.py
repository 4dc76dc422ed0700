"""Three `sam2-stream serve` instances (micro model) behind Debian's nginx on 127.0.0.1, with the
shipped deploy/nginx/sam2-stream-routes.conf (only its listen address changed) and an
instances file naming the three: sessions are created through the proxy on more than one
instance, and each session's websocket, prompts and masklets go through the proxy to its
owner. Then one instance is drained with SIGTERM: its live sessions go on to the end, new
sessions land on the others, and it exits with 0. Another drains on `POST /admin/drain`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import httpx
import pytest
from conftest import DATA, MICRO_CHECKPOINT
from serve_process import free_port
from waiting import poll
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
TOKEN = "proxy-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMES = ("inst-a", "inst-b", "inst-c")
FRAMES = 6
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs it)"
)


def _clip(path: Path) -> Path:
    with av.open(str(DATA / "bedroom.mp4")) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i, decoded in enumerate(source.decode(video=0)):
            if i == FRAMES:
                break
            frame = decoded.reformat(width=160, height=96, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class Instance:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.port = name, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        command = [
            sys.executable, "-m", "streamer.cli", "-v", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--model", "sam2.1_micro", "--checkpoint",
            str(MICRO_CHECKPOINT), "--device", "cpu",
        ]  # fmt: skip
        env = {
            **os.environ,
            "SAM2_STREAM_AUTH_TOKEN": TOKEN,
            "SAM2_STREAM_ADMIN_TOKEN": TOKEN,  # the single-token model: the tests drain
            "SAM2_STREAM_INSTANCE_NAME": name,
            "SAM2_STREAM_DRAIN_GRACE_SECONDS": "120",
            "SAM2_STREAM_ICE_HOSTS": '["127.0.0.1"]',
        }
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited {self.process.returncode}:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.base}/readyz", headers=AUTH, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Instance]]]:
    tmp = tmp_path_factory.mktemp("proxy")
    instances = {name: Instance(name, tmp) for name in NAMES}
    nginx = None
    try:
        for instance in instances.values():
            poll(instance.ready, 180, f"{instance.name} ready", step=0.2)
        port = free_port()
        nginx = _start_nginx(tmp, port, instances)
        yield f"http://127.0.0.1:{port}", instances
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        for instance in instances.values():
            instance.stop()


def _start_nginx(tmp: Path, port: int, instances: dict[str, Instance]) -> subprocess.Popen:
    """The shipped routes with only the listen address changed; instances file and a minimal
    main file (paths in tmp) written for this test."""
    routes = (ROOT / "deploy/nginx/sam2-stream-routes.conf").read_text()
    routes, count = re.subn(r"listen 8080;", f"listen 127.0.0.1:{port};", routes)
    assert count == 1
    (tmp / "routes.conf").write_text(routes)
    shipped = (ROOT / "deploy/nginx/sam2-stream-instances.conf").read_text()
    owner_map = shipped[shipped.index("map $uri $sam2_upstream") :]  # the shipped map, as is
    servers = "".join(f"    server 127.0.0.1:{i.port};\n" for i in instances.values())
    upstreams = "".join(
        f"upstream sam2_{i.name} {{\n    server 127.0.0.1:{i.port};\n}}\n"
        for i in instances.values()
    )
    (tmp / "instances.conf").write_text(
        f"upstream sam2_any {{\n    least_conn;\n{servers}}}\n{upstreams}{owner_map}"
    )
    temp = tmp / "nginx_temp"
    temp.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (tmp / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/nginx_error.log info;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  access_log {tmp}/nginx_access.log;\n"
        + "".join(f"  {kind}_temp_path {temp}/{kind};\n"
                  for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"  include {tmp}/instances.conf;\n  include {tmp}/routes.conf;\n}}\n"
    )  # fmt: skip
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx_error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(
                f"nginx exited {process.returncode}:\n{(tmp / 'nginx_error.log').read_text()}"
            )
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    poll(answers, 20, "nginx", step=0.2)
    return process


def _create(proxy: str, clip: Path) -> dict:
    body = {"source": str(clip), "paced": False, "start": "on_connect"}
    response = httpx.post(f"{proxy}/sessions", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


async def _follow(proxy: str, session_id: str) -> dict:
    """Through the proxy: hello, a click once a frame is in, masklets until `end`."""
    url = proxy.replace("http://", "ws://") + f"/sessions/{session_id}/ws"
    seen: dict = {"frames": 0, "objects": 0, "ack": None}
    async with connect(url, additional_headers=AUTH) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert hello["type"] == "hello" and hello["session_id"] == session_id
        clicked = False
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if message["type"] == "frame":
                seen["frames"] += 1
                seen["objects"] = max(seen["objects"], len(message["objects"]))
                if not clicked:
                    click = {"type": "add_points", "id": "c", "points": [[80, 48]], "labels": [1]}
                    await ws.send(json.dumps(click))
                    clicked = True
            elif message["type"] == "ack":
                assert message["objects"] and message["objects"][0]["rle"]["size"] == [96, 160]
                seen["ack"] = message
            elif message["type"] == "end":
                assert message["state"] == "finished", message
                seen["end"] = message
                if seen["ack"] is not None:
                    return seen
            else:
                pytest.fail(f"unexpected message {message}")
    pytest.fail(f"session {session_id}: no end and ack in {TIMEOUT} s: {seen}")


def _follow_all(proxy: str, session_ids: list[str]) -> list[dict]:
    async def all_of() -> list[dict]:
        return await asyncio.gather(*(_follow(proxy, s) for s in session_ids))

    return asyncio.run(all_of())


def _owner(session_id: str) -> str:
    owner, _, suffix = session_id.rpartition("-")
    assert owner in NAMES and re.fullmatch(r"[0-9a-f]{12}", suffix), session_id
    return owner


def test_whip_publish_through_the_proxy(cluster) -> None:
    """POST /whip on the proxy opens a session on some instance; its Location and websocket
    work through the proxy, and DELETE on the Location ends the publication."""
    from test_webrtc import Client, ClipTrack

    from streamer.webrtc.media import configure_ice_hosts

    proxy, _ = cluster
    with av.open(str(DATA / "bedroom.mp4")) as container:
        frames = [
            f.reformat(width=160, height=96).to_ndarray(format="rgb24")
            for _, f in zip(range(10), container.decode(video=0), strict=False)
        ]

    async def body() -> tuple[str, str, dict, int, int]:
        client = Client(frames=None, receive_video=False, data_channel=False)
        client.pc.addTransceiver(ClipTrack(frames), direction="sendonly")
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                response = await http.post(
                    f"{proxy}/whip",
                    content=await client.offer(),
                    headers={**AUTH, "Content-Type": "application/sdp"},
                )
                assert response.status_code == 201, response.text
                session_id = response.headers["x-session-id"]
                location = response.headers["location"]
                await client.accept(response.text)
                url = proxy.replace("http://", "ws://") + f"/sessions/{session_id}/ws"
                async with connect(url, additional_headers=AUTH) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                    frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                    assert hello["type"] == "hello" and frame["type"] == "frame", frame
                    deleted = (await http.delete(f"{proxy}{location}", headers=AUTH)).status_code
                gone = (await http.get(f"{proxy}/sessions/{session_id}", headers=AUTH)).status_code
                return session_id, location, frame, deleted, gone
        finally:
            await client.close()

    configure_ice_hosts(["127.0.0.1"])
    try:
        session_id, location, frame, deleted, gone = asyncio.run(body())
    finally:
        configure_ice_hosts([])
    assert _owner(session_id) in NAMES
    assert re.fullmatch(rf"/sessions/{session_id}/whip/[^/]+", location), location
    assert (frame["width"], frame["height"]) == (160, 96)
    assert deleted == 200 and gone == 404


def test_sessions_route_to_their_owner_and_drain(cluster, tmp_path: Path) -> None:
    proxy, instances = cluster
    clip = _clip(tmp_path / "clip.mp4")
    sessions = [_create(proxy, clip) for _ in range(6)]
    owners = {s["id"]: _owner(s["id"]) for s in sessions}
    assert len(set(owners.values())) > 1, owners
    for session_id, owner in owners.items():  # each lives on its owner only
        for name, instance in instances.items():
            direct = httpx.get(f"{instance.base}/sessions/{session_id}", headers=AUTH)
            assert direct.status_code == (200 if name == owner else 404)
        via_proxy = httpx.get(f"{proxy}/sessions/{session_id}", headers=AUTH)
        assert via_proxy.status_code == 200 and via_proxy.json()["state"] == "waiting"

    victim = owners[sessions[0]["id"]]
    others = [s for s, o in owners.items() if o != victim]
    theirs = [s for s, o in owners.items() if o == victim]
    for result in _follow_all(proxy, others):
        assert result["frames"] >= 1 and result["end"]["frames"] == FRAMES

    # Drain the victim with SIGTERM while its sessions are still waiting for a viewer.
    doomed = instances[victim]
    doomed.process.send_signal(signal.SIGTERM)
    poll(
        lambda: httpx.get(f"{doomed.base}/readyz", headers=AUTH).status_code == 503,
        TIMEOUT,
        "the drained instance to report not ready",
        step=0.2,
    )
    assert httpx.get(f"{doomed.base}/readyz", headers=AUTH).json()["draining"] is True
    metrics = httpx.get(f"{doomed.base}/metrics", headers=AUTH).text
    assert 'sam2_stream_drain_state{state="draining"} 1' in metrics
    refused = httpx.post(f"{doomed.base}/sessions", json={"source": str(clip)}, headers=AUTH)
    assert refused.status_code == 503 and refused.json()["code"] == "draining"
    later = [_create(proxy, clip)["id"] for _ in range(4)]  # the proxy skips the 503s
    assert all(_owner(s) != victim for s in later), later
    assert doomed.process.poll() is None  # still serving its live sessions

    # Its live sessions go on to the end, through the proxy; then it exits cleanly.
    for result in _follow_all(proxy, theirs):
        assert result["frames"] >= 1 and result["end"]["frames"] == FRAMES
    assert doomed.process.wait(timeout=TIMEOUT) == 0
    assert "drained after" in doomed.log.read_text()

    # POST /admin/drain needs the token; with it, an instance with no live session drains
    # at once and exits with 0 too.
    for session_id in later:
        assert httpx.delete(f"{proxy}/sessions/{session_id}", headers=AUTH).status_code == 204
    second = next(i for n, i in instances.items() if n != victim)
    assert httpx.post(f"{second.base}/admin/drain").status_code == 401
    started = httpx.post(f"{second.base}/admin/drain", headers=AUTH)
    assert started.status_code == 202 and started.json()["state"] in ("draining", "drained")
    assert second.process.wait(timeout=TIMEOUT) == 0
