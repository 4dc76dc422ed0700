"""Small parts of scale-out: instance-prefixed session ids, the ICE address setting, the drain
settings and the drain's waiting rules."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiortc import RTCPeerConnection
from pydantic import ValidationError

from streamer.service.drain import Drainer, DrainState, render_drain_metrics
from streamer.session_ids import default_instance_name, mint_session_id, session_owner
from streamer.sessions import SessionState
from streamer.settings import Settings
from streamer.webrtc.media import configure_ice_hosts, configure_ice_public_ip


def test_session_ids_carry_the_instance_name() -> None:
    ids = {mint_session_id("sam2-stream-1") for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"sam2-stream-1-[0-9a-f]{12}", i) for i in ids)
    assert all(session_owner(i) == "sam2-stream-1" for i in ids)
    bare = mint_session_id("")
    assert re.fullmatch(r"[0-9a-f]{12}", bare) and session_owner(bare) == ""
    assert session_owner("not an id") is None


def test_instance_name_setting() -> None:
    assert re.fullmatch(r"([a-z0-9]([a-z0-9-]*[a-z0-9])?)?", default_instance_name())
    assert Settings().instance_name == default_instance_name()
    assert Settings(instance_name="").instance_name == ""
    assert Settings(instance_name="gpu-node-3").instance_name == "gpu-node-3"
    for bad in ("Upper", "under_score", "trailing-", "a.b"):
        with pytest.raises(ValidationError):
            Settings(instance_name=bad)
    with pytest.raises(ValidationError):
        Settings(ice_public_ip="not-an-ip")
    with pytest.raises(ValidationError):
        Settings(drain_grace_seconds=-1)


def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


def test_ice_public_ip_replaces_host_candidates() -> None:
    async def offer_sdp() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    configure_ice_hosts(["127.0.0.1"])
    try:
        assert _candidate_addresses(asyncio.run(offer_sdp())) == {"127.0.0.1"}
        configure_ice_public_ip("203.0.113.7")
        assert _candidate_addresses(asyncio.run(offer_sdp())) == {"203.0.113.7"}
        configure_ice_public_ip(None)
        assert _candidate_addresses(asyncio.run(offer_sdp())) == {"127.0.0.1"}
        with pytest.raises(ValueError):
            configure_ice_public_ip("nope")
    finally:
        configure_ice_public_ip(None)
        configure_ice_hosts([])


class _FakeSession:
    def __init__(self, state: SessionState) -> None:
        self.state = state


class _FakeManager:
    def __init__(self, sessions: list[_FakeSession]) -> None:
        self.sessions, self.draining = sessions, False

    def list(self) -> list[_FakeSession]:
        return list(self.sessions)


def test_drain_waits_for_live_sessions_then_for_the_grace_period() -> None:
    async def scenario() -> list[str]:
        events: list[str] = []
        live = _FakeSession(SessionState.RUNNING)
        manager = _FakeManager([live, _FakeSession(SessionState.FINISHED)])
        drainer = Drainer(
            manager=lambda: manager, grace_seconds=30, on_drained=lambda: events.append("done")
        )
        assert not drainer.draining and 'state="serving"} 1' in render_drain_metrics(drainer)
        assert drainer.start("test") and not drainer.start("again")
        assert manager.draining and drainer.live_sessions() == 1
        assert 'state="draining"} 1' in render_drain_metrics(drainer)
        assert 0 < drainer.seconds_left() <= 30
        await asyncio.sleep(0.6)
        events.append(drainer.state.value)  # the running session holds the drain
        live.state = SessionState.FINISHED
        await asyncio.wait_for(drainer._task, 5)
        events.append(drainer.state.value)

        # A session that never ends is cut off when the grace period is over.
        stuck = Drainer(
            manager=lambda: _FakeManager([_FakeSession(SessionState.WAITING)]),
            grace_seconds=0.3,
        )
        started = time.monotonic()
        stuck.start("test")
        await asyncio.wait_for(stuck._task, 5)
        assert stuck.state is DrainState.DRAINED and 0.25 < time.monotonic() - started < 3
        return events

    assert asyncio.run(scenario()) == ["draining", "done", "drained"]
