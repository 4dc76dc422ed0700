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
    # The session's capability tokens (docs/protocol.md, "Authorization"): only in the
    # response to the request that created it, never in info or listings.
    token: str | None = None
    viewer_token: str | None = None
