"""HTTP schemas of the session resource: `SessionCreate` (request) and `SessionInfo` (public
view). `streamer.sessions` re-exports both."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streamer.protocol import DetectOptions


class SessionCreate(BaseModel):
    """Request to open a session.

    source: "webrtc", "rtsp://...", "/dev/videoN" or "camera:N", or a video file path / URL.
    paced: files only: release frames at native fps like a live stream (drops when inference
        is slower) instead of processing every frame (default).
    start: "on_connect" waits for a first subscriber before consuming frames (so a client sees
        a file from its first frame); "now" starts at once.
    auto_seed: segment everything on the first frame and track what is found.
    max_objects: objects tracked at most (capped by the server's max_objects_per_session).
    max_frames: files only: stop after this many frames.
    non_overlapping: each pixel belongs to at most one object.
    detect: seed objects with the server's detector on the first frame and every
        `every_n_frames` frames (`DetectOptions`; needs `serve --detector`).
    memory: which past frames each object remembers: "sam2" (default) or "dam4sam"
        (distractor-aware memory: keeps frames that revealed look-alikes; `SessionOptions`).
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=4096)
    paced: bool = False
    start: Literal["on_connect", "now"] = "on_connect"
    auto_seed: bool = False
    max_objects: int | None = Field(default=None, ge=1)
    max_frames: int | None = Field(default=None, ge=1)
    non_overlapping: bool = False
    detect: DetectOptions | None = None
    memory: Literal["sam2", "dam4sam"] = "sam2"


class PeerFailureInfo(BaseModel):
    """A WebRTC peer of the session that failed (`streamer.webrtc.failures`)."""

    peer_id: str
    role: str  # "offer" | "whip"
    stage: str  # "ice" | "dtls" | "timeout"
    reason: str
    at: float  # Unix time


class SessionInfo(BaseModel):
    """Public view of a session (the HTTP API's session resource)."""

    id: str
    source: str
    kind: str
    state: str
    error: str | None
    source_state: str
    back_pressure: str
    created_at: float
    frame_idx: int
    frame_size: list[int] | None
    obj_ids: list[int]
    frames_captured: int
    frames_processed: int
    frames_dropped: int
    queue_depth: int
    subscribers: int
    inference_latency_mean: float
    device: str  # the device whose scheduler serves it, e.g. "cuda:1" or "cpu:0"
    device_seconds: float  # device time charged to it (its share of batched steps + commands)
    # Seconds until the lifecycle policy closes this session (None: in use, or no TTL
    # applies); see `streamer.sessions.lifecycle`.
    expires_in: float | None = None
    # Which memory its objects use, and how many frames dam4sam promoted to their
    # distractor-resolving memory so far (0 with sam2).
    memory: str = "sam2"
    promotions: int = 0
    # Its WebRTC peers that failed (ICE, DTLS, never connected), most recent last.
    peer_failures: list[PeerFailureInfo] = []
    # The session's capability tokens (docs/protocol.md, "Authorization"): only in the
    # response to the request that created it, never in info or listings.
    token: str | None = None
    viewer_token: str | None = None
