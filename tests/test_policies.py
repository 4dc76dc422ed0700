"""The named policies of issue 9, tested alone (no server): session lifecycle TTLs and the
reaper, the source policy, log redaction and SDP offer checks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamer.ingest.policy import SourcePolicy, SourcePolicyError, source_scheme
from streamer.service.auth import BearerAuthMiddleware, EmptyTokenError
from streamer.service.redact import RedactingFilter, redact, redact_query
from streamer.sessions import SessionNotFoundError, SessionState
from streamer.sessions.lifecycle import LifecyclePolicy, SessionReaper
from streamer.settings import Settings
from streamer.webrtc.sdp import offer_problem

# --- lifecycle --------------------------------------------------------------------------------


@dataclass
class FakeSession:
    id: str
    state: SessionState = SessionState.RUNNING
    subscribers: list = field(default_factory=list)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_policy_deadlines():
    policy = LifecyclePolicy(finished_ttl=10, idle_ttl=60)
    assert policy.deadline(idle_since=None, ended_at=None) is None  # in use
    assert policy.deadline(idle_since=None, ended_at=5) is None  # ended but still watched
    assert policy.deadline(idle_since=100, ended_at=None) == 160
    assert policy.deadline(idle_since=100, ended_at=120) == 130  # the later of the two
    assert LifecyclePolicy(finished_ttl=0, idle_ttl=0).deadline(idle_since=1, ended_at=1) is None


def test_reaper_closes_idle_and_finished_sessions_but_not_those_in_use():
    clock = Clock()
    sessions = {
        "idle": FakeSession("idle"),
        "watched": FakeSession("watched", subscribers=["ws"]),
        "peer": FakeSession("peer"),
        "done": FakeSession("done", state=SessionState.FINISHED),
    }
    deleted: list[str] = []

    def delete(sid: str) -> None:
        deleted.append(sid)
        if sessions.pop(sid, None) is None:
            raise SessionNotFoundError(sid)

    reaper = SessionReaper(
        policy=LifecyclePolicy(finished_ttl=5, idle_ttl=30),
        sessions=lambda: list(sessions.values()),
        delete=delete,
        peers=lambda sid: 1 if sid == "peer" else 0,
        clock=clock,
    )
    assert reaper.reap() == []
    assert reaper.expires_in(sessions["idle"]) == 30
    assert reaper.expires_in(sessions["watched"]) is None
    clock.now += 5
    assert reaper.reap() == ["done"]
    sessions["watched"].subscribers.clear()  # its last client leaves: the clock starts now
    clock.now += 25
    assert reaper.reap() == ["idle"]
    clock.now += 29
    assert reaper.reap() == []
    clock.now += 1
    assert reaper.reap() == ["watched"]
    assert "peer" in sessions and deleted == ["done", "idle", "watched"]
    assert reaper.reaped == 3


# --- source policy ----------------------------------------------------------------------------


def test_source_schemes():
    cases = {
        "webrtc": "webrtc", "camera:0": "camera", "/dev/video2": "camera", "clip.mp4": "file",
        "/data/a:b.mp4": "file", "file:///x.mp4": "file", "RTSP://h/s": "rtsp",
        "http://h/x.mp4": "http", "concat:a|b": "concat", "C:\\\\v.mp4": "file",
    }  # fmt: skip
    assert {spec: source_scheme(spec) for spec in cases} == cases


def test_default_policy_refuses_http_and_unknown_protocols_but_not_files():
    policy = SourcePolicy.from_settings(Settings())
    assert policy.resolve("/anywhere/clip.mp4") == "/anywhere/clip.mp4"
    assert policy.resolve("rtsp://cam/stream") == "rtsp://cam/stream"
    for spec in ("http://169.254.169.254/latest", "https://x/y.mp4", "concat:/a|/b", "pipe:0"):
        with pytest.raises(SourcePolicyError):
            policy.resolve(spec)


def test_media_root_keeps_files_under_it(tmp_path: Path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"")
    (root / "escape").symlink_to(tmp_path)
    policy = SourcePolicy(allowed=frozenset({"file"}), media_root=root)
    assert policy.resolve("sub/a.mp4") == str((root / "sub" / "a.mp4").resolve())
    assert policy.resolve(f"file://{root}/sub/a.mp4") == str((root / "sub" / "a.mp4").resolve())
    for spec in ("../x.mp4", "/etc/passwd", "escape/x.mp4", "file:///etc/passwd"):
        with pytest.raises(SourcePolicyError):
            policy.resolve(spec)
    with pytest.raises(SourcePolicyError):
        policy.resolve("rtsp://cam/s")  # not in `allowed`


# --- secrets ----------------------------------------------------------------------------------


def test_redaction_of_tokens_and_query_strings():
    assert redact("GET /s/ws?token=abc&x=1") == "GET /s/ws?token=***&x=1"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact_query('"GET /s?token=abc HTTP/1.1"') == '"GET /s?<redacted> HTTP/1.1"'
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/x?token=sekrit", "1.1", 200), None,
    )  # fmt: skip
    assert RedactingFilter().filter(record)
    assert "sekrit" not in record.getMessage() and record.args[2] == "/x?<redacted>"
    record = logging.LogRecord(
        "streamer.x", logging.INFO, __file__, 1, "url %s", ("ws://h/s?token=sekrit",), None
    )
    RedactingFilter().filter(record)
    assert "sekrit" not in record.getMessage()


def test_empty_tokens_are_refused():
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="auth_token is empty"):
            Settings(auth_token=empty)
        with pytest.raises(EmptyTokenError):
            BearerAuthMiddleware(lambda *a: None, token=empty)


# --- SDP --------------------------------------------------------------------------------------

GOOD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


def test_offer_checks():
    assert offer_problem(GOOD, needs=("video",)) is None
    assert "v=0" in offer_problem("garbage", needs=("video",))
    assert "no media" in offer_problem(GOOD.split("m=")[0], needs=("video", "application"))
    data_only = GOOD.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=application 9 UDP/DTLS/SCTP")
    assert offer_problem(data_only, needs=("video", "application")) is None
    assert "needs one of: video" in offer_problem(data_only, needs=("video",))
