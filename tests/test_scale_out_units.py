"""Small parts of scale-out: instance-prefixed session ids, the ICE address setting, drain
settings."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection
from pydantic import ValidationError

from streamer.session_ids import default_instance_name, mint_session_id, session_owner
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
