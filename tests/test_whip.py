"""WHIP ingest (RFC 9725) with a real aiortc publisher against `sam2-stream serve` on 127.0.0.1.

Reuses test_webrtc's server, clip and client helpers (each module starts its own server).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import test_webrtc as helpers
from aiortc.mediastreams import AudioStreamTrack
from conftest import DATA
from test_webrtc import AUTH, TIMEOUT, Client, ClipTrack, create_session, get_json, run
from waiting import poll_async
from websockets.asyncio.client import connect

# The helper module's fixtures, used here by name (each module gets its own server).
server = helpers.server
clip_frames = helpers.clip_frames
loopback_ice = helpers.loopback_ice

SDP = {"Content-Type": "application/sdp"}


def publisher(frames, *, audio: bool = False) -> Client:
    """A send-only peer, as WHIP clients (OBS, GStreamer's whipsink) are."""
    client = Client(frames=None, receive_video=False, data_channel=False)
    client.pc.addTransceiver(ClipTrack(frames), direction="sendonly")
    if audio:
        client.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    return client


def media_directions(sdp: str) -> dict[str, str]:
    """{"audio"|"video": direction} of each m-section of an SDP."""
    directions, kind = {}, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
        elif kind and line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive"):
            directions[kind] = line[2:]
    return directions


async def recv_type(ws) -> str:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"]


def ws_url(base: str, session_id: str) -> str:
    return base.replace("http://", "ws://") + f"/sessions/{session_id}/ws"


def test_whip_publish_track_and_delete(server, clip_frames):
    async def body():
        client = publisher(clip_frames, audio=True)
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(
                f"{server}/whip", content=await client.offer(), headers={**AUTH, **SDP}
            )
            assert response.status_code == 201, response.text
            assert response.headers["content-type"] == "application/sdp"
            location = response.headers["location"]
            session_id = response.headers["x-session-id"]
            assert location.startswith(f"/sessions/{session_id}/whip/")
            directions = media_directions(response.text)
            await client.accept(response.text)

            # Media flows into the session: a websocket viewer gets tracked frames.
            async with connect(ws_url(server, session_id), additional_headers=AUTH) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                assert hello["type"] == "hello" and hello["source"] == "webrtc"
                kinds = [await recv_type(ws)]  # a first frame: prompts need one
                await ws.send(json.dumps({"type": "add_box", "id": 1, "box": [100, 40, 220, 170]}))
                tracked = 0
                while tracked < 3:
                    message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                    kinds.append(message["type"])
                    assert message["type"] in ("frame", "ack"), message
                    if message["type"] == "frame" and message["objects"]:
                        tracked += 1
                [peer] = (await get_json(http, f"{server}/sessions/{session_id}/webrtc"))["peers"]

                deleted = await http.delete(f"{server}{location}", headers=AUTH)
                # The session belonged to the publication: it ends with it.
                end = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                while end["type"] == "frame":
                    end = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            gone = await http.get(f"{server}/sessions/{session_id}", headers=AUTH)
            again = await http.delete(f"{server}{location}", headers=AUTH)
            await client.close()
            return directions, kinds, peer, deleted, end, gone, again

    directions, kinds, peer, deleted, end, gone, again = run(body())
    assert directions == {"video": "recvonly", "audio": "inactive"}, "audio is declined"
    assert "ack" in kinds and "frame" in kinds
    assert peer["role"] == "whip" and peer["publishing"] and peer["frames_pushed"] > 0
    assert deleted.status_code == 200
    assert end == {"v": 1, "type": "end", "state": "closed", "error": None, "frames": end["frames"]}
    assert gone.status_code == 404
    assert again.status_code == 404


def test_whip_into_an_existing_session(server, clip_frames):
    session = create_session(server, source="webrtc")
    url = f"{server}/sessions/{session['id']}/whip"

    async def body():
        first, second = publisher(clip_frames), publisher(clip_frames)
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(url, content=await first.offer(), headers={**AUTH, **SDP})
            assert response.status_code == 201, response.text
            assert response.headers["x-session-id"] == session["id"]
            await first.accept(response.text)
            await poll_async(lambda: _frames_captured(http, server, session["id"]), TIMEOUT)
            busy = await http.post(url, content=await second.offer(), headers={**AUTH, **SDP})
            patch = await http.patch(f"{server}{response.headers['location']}", headers=AUTH)
            deleted = await http.delete(f"{server}{response.headers['location']}", headers=AUTH)
            await poll_async(lambda: _no_peers(http, server, session["id"]), TIMEOUT)
            state = await get_json(http, f"{server}/sessions/{session['id']}")
            await first.close()
            await second.close()
            return busy, patch, deleted, state

    busy, patch, deleted, state = run(body())
    assert busy.status_code == 409, "one publisher per session"
    assert patch.status_code == 405, "no trickle ICE / ICE restart"
    assert deleted.status_code == 200
    assert state["state"] in ("waiting", "running"), "the session outlives its publisher"
    httpx.delete(f"{server}/sessions/{session['id']}", headers=AUTH, timeout=20)


def test_whip_refuses_bad_requests(server, clip_frames):
    async def body():
        client = publisher(clip_frames)
        offer = await client.offer()
        await client.close()
        async with httpx.AsyncClient(timeout=20) as http:
            before = len((await get_json(http, f"{server}/sessions"))["sessions"])
            whip = f"{server}/whip"
            file_session = create_session(server, source=str(DATA / "bedroom.mp4"), max_frames=1)
            results = {
                "json": await http.post(whip, json={"sdp": offer}, headers=AUTH),
                "no_type": await http.post(whip, content=offer, headers=AUTH),
                "no_token": await http.post(whip, content=offer, headers=SDP),
                "bad_token": await http.post(
                    whip, content=offer, headers={**SDP, "Authorization": "Bearer nope"}
                ),
                "garbage": await http.post(whip, content="v=0 nonsense", headers={**AUTH, **SDP}),
                "huge": await http.post(whip, content="v" * 100_000, headers={**AUTH, **SDP}),
                "not_webrtc": await http.post(
                    f"{server}/sessions/{file_session['id']}/whip",
                    content=offer,
                    headers={**AUTH, **SDP},
                ),
                "unknown": await http.delete(
                    f"{server}/sessions/{file_session['id']}/whip/nope", headers=AUTH
                ),
            }
            await http.delete(f"{server}/sessions/{file_session['id']}", headers=AUTH)
            after = len((await get_json(http, f"{server}/sessions"))["sessions"])
            return results, before, after

    results, before, after = run(body())
    assert results["json"].status_code == 415
    assert results["json"].json()["code"] == "unsupported_media_type"
    assert results["no_type"].status_code == 415
    assert results["no_token"].status_code == 401
    assert results["bad_token"].status_code == 401
    assert results["garbage"].status_code == 400
    assert results["huge"].status_code == 413
    assert results["not_webrtc"].status_code == 409
    assert results["unknown"].status_code == 404
    assert after == before, "refused publications leave no session behind"


async def _frames_captured(http: httpx.AsyncClient, base: str, session_id: str) -> bool:
    return (await get_json(http, f"{base}/sessions/{session_id}"))["frames_captured"] > 0


async def _no_peers(http: httpx.AsyncClient, base: str, session_id: str) -> bool:
    return (await get_json(http, f"{base}/sessions/{session_id}/webrtc"))["peers"] == []
