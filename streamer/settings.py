"""Service settings: one pydantic-settings class, read from `SAM2_STREAM_*` environment variables.

Built once in the app factory (or by `sam2-stream serve`) and passed to whatever needs it;
nothing else in the service reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, IPvAnyAddress, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.session_ids import INSTANCE_NAME_PATTERN, default_instance_name


class OutputOptions(BaseModel):
    """How a subscriber wants its `frame` messages (defaults; clients change them with
    `set_options`).

    format: mask encoding; only "rle" (COCO RLE, counts as a string) for now.
    obj_ids: objects to include (None: all).
    max_fps: at most this many frame messages per second (None: every processed frame).
    mask_downscale: masks are sent at 1/N of the frame's resolution (1: full size).
    """

    model_config = {"frozen": True, "extra": "forbid"}

    format: Literal["rle"] = "rle"
    obj_ids: tuple[int, ...] | None = None
    max_fps: float | None = Field(default=None, gt=0)
    mask_downscale: int = Field(default=1, ge=1, le=16)


class Settings(BaseSettings):
    """Everything the service is configured with (env prefix `SAM2_STREAM_`).

    Lists (e.g. `ice_hosts`) are given as JSON in the environment:
    `SAM2_STREAM_ICE_HOSTS='["127.0.0.1"]'`.
    """

    model_config = SettingsConfigDict(env_prefix="SAM2_STREAM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # HTTPS (browsers allow the camera only on https or localhost): PEM certificate and key.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    # Model: config name or YAML path, checkpoint file, device ("cpu", "cuda", None = auto).
    model: str = "sam2.1_hiera_t"
    checkpoint: Path | None = None
    device: str | None = None
    # Compiled (torch.compile) video path of the official "vos_optimized" builder.
    vos_optimized: bool = False
    # auto: bf16 autocast + TF32 on CUDA (as the official runs), fp32 on the CPU; or force
    # fp32 / bf16 / fp16 (`sam2_video.precision`; drift figures in docs/serving.md).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # vos_optimized: seconds the start-up warm-up may spend compiling every batch shape before
    # the service reports ready (shapes left over compile while serving; /readyz lists them),
    # and where inductor keeps compiled kernels (None: $TORCHINDUCTOR_CACHE_DIR, else
    # ~/.cache/sam2-stream/inductor), so that a restart is quick.
    compile_warmup_seconds: float = Field(default=900.0, ge=0)
    compile_cache_dir: Path | None = None

    max_sessions: int = Field(default=8, ge=1)
    max_objects_per_session: int = Field(default=16, ge=1)

    # Bearer token for every endpoint except /healthz; None disables auth.
    auth_token: SecretStr | None = None
    # Authorization (docs/protocol.md, "Authorization"): with `auth_token` set, it only creates
    # sessions; each session's own tokens view/control it; `admin_token` (None: no admin)
    # lists sessions, reads /metrics, drains, and deletes any session.
    admin_token: SecretStr | None = None
    # Per client (its address; behind a proxy, the forwarded one): sessions open at most
    # (None: only `max_sessions`), and expensive commands across all its sessions.
    max_sessions_per_client: int | None = Field(default=None, ge=1)
    client_expensive_commands_per_minute: float = Field(default=24.0, gt=0)
    client_expensive_commands_burst: int = Field(default=6, ge=1)
    # Websockets one session serves at once; more are closed with 4430.
    max_websockets_per_session: int = Field(default=16, ge=1)

    # Host addresses the WebRTC stack gathers ICE candidates on (empty: all interfaces);
    # tests pass ["127.0.0.1"] to stay on loopback.
    ice_hosts: list[str] = Field(default_factory=list)

    # Largest websocket message the protocol accepts; bigger ones get an `error` reply.
    max_message_bytes: int = Field(default=1 << 20, ge=1024)
    # Frame messages queued per subscriber before the oldest are dropped (live sources);
    # batch sources pause instead of dropping.
    max_pending_messages: int = Field(default=8, ge=1)
    default_output: OutputOptions = Field(default_factory=OutputOptions)

    # Automatic seeding (`auto_seed`): prompt grid density and objects added at most.
    auto_seed_points_per_side: int = Field(default=16, ge=1)
    auto_seed_max_objects: int = Field(default=8, ge=1)
    # Detector for `detect` (see sam2_video.detect.load_detector): a YOLO .pt (Ultralytics,
    # AGPL-3.0), a transformers model id or folder (Grounding DINO, OWLv2), or
    # "package.module:function"; None: `detect` answers `no_detector`.
    detector: str | None = None

    static_dir: Path = Path(__file__).parent / "static"

    # --- serving core (devices, batching, fairness) ---
    # Devices to serve on, one scheduler + model replica each: ["cuda:0", "cuda:1"], or
    # ["cpu", "cpu"] for two CPU replicas. Empty: `device` if set, else every visible GPU, else
    # the CPU. (CLI: --devices cuda:0,cuda:1.)
    devices: list[str] = Field(default_factory=list)
    # Sessions whose frames share one batched step at most; None: the measured default of the
    # device type (`DEFAULT_MAX_BATCH`).
    max_batch: int | None = Field(default=None, ge=1, le=64)
    # Expensive commands (auto_seed) per session: a burst, refilled at this rate; past it the
    # client gets `rate_limited` with a retry_after.
    expensive_commands_per_minute: float = Field(default=12.0, gt=0)
    expensive_commands_burst: int = Field(default=3, ge=1)

    # --- scale-out (instance name, ICE address, drain) ---
    # Prefix of the session ids this instance mints (`<instance_name>-<12 hex>`), which a
    # proxy routes on (docs/deploy.md). Default: the host name (the pod name on Kubernetes)
    # as a DNS label; "" mints bare hex ids.
    instance_name: str = Field(default_factory=default_instance_name, pattern=INSTANCE_NAME_PATTERN)
    # Address advertised in ICE candidates instead of the gathered host addresses, for an
    # instance behind 1:1 NAT (a node's public IP); None: advertise what is gathered.
    ice_public_ip: IPvAnyAddress | None = None
    # After a drain starts (SIGTERM, POST /admin/drain), live sessions run at most this long;
    # keep Kubernetes' terminationGracePeriodSeconds a little above it.
    drain_grace_seconds: float = Field(default=300.0, ge=0)
    # Exit the process (code 0) once drained; False keeps serving /healthz (tests, embedding).
    drain_exit: bool = True

    # --- hardening (limits, TTLs, source policy) ---
    # Request bodies of every HTTP route (JSON, SDP) above this are refused with 413 before
    # they are read.
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # Largest mask (pixels) an `add_mask` may describe before it is checked against the
    # session's frame size; it is never decoded above either.
    max_mask_pixels: int = Field(default=4096 * 4096, ge=1)
    # Largest video frame (pixels, and pixels a side) a source may deliver: checked from the
    # container/codec header when it opens and on every decoded frame, before conversion;
    # files above it are refused (400), live sources fail (docs/protocol.md, "Limits").
    max_frame_pixels: int = Field(default=4096 * 4096, ge=1)
    max_frame_side: int = Field(default=8192, ge=1)
    # Bytes of decoded frames all batch file sources together may hold ahead of the worker,
    # beyond one frame each (which is always allowed, so every session progresses).
    decode_ahead_bytes: int = Field(default=256 << 20, ge=0)
    # Replies (`ack`, `error`, `end`) queued per subscriber, plus its prompts still waiting
    # for the worker; above it the client is not reading and is disconnected (close 4429).
    max_pending_replies: int = Field(default=64, ge=1)
    # Lifecycle (seconds; 0 disables one): a finished/failed session is closed this long
    # after it ended and its last client left; a session without any client (websocket,
    # WebRTC/WHIP peer) is closed after `idle_ttl`; a WebRTC/WHIP peer that has not connected
    # within `connect_timeout`, or whose video stops for `peer_silence_timeout`, is closed.
    finished_ttl: float = Field(default=60.0, ge=0)
    idle_ttl: float = Field(default=300.0, ge=0)
    connect_timeout: float = Field(default=15.0, ge=0)
    peer_silence_timeout: float = Field(default=5.0, ge=0)
    # Network sources: seconds to wait for the connection, then for each read, before the
    # source reports `stalled` (files/URLs then fail; RTSP reconnects).
    source_open_timeout: float = Field(default=5.0, gt=0)
    source_read_timeout: float = Field(default=5.0, gt=0)
    # Source policy: the source kinds / URL schemes a client may open ("file" = local paths,
    # "camera", "webrtc", then URL schemes). http(s) (server-side fetches: SSRF) and the socket
    # schemes srt/udp/tcp/rtp (they can listen on the server) are off by default.
    # media_root: local files must lie under it (None: any file this user can read).
    source_schemes: list[str] = Field(
        default_factory=lambda: (
            [
                "file",
                "camera",
                "webrtc",
                "rtsp",
                "rtsps",
                "rtmp",
                "rtmps",
            ]
        )
    )
    media_root: Path | None = None

    @field_validator("auth_token", "admin_token")
    @classmethod
    def _token_not_empty(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty token would make "Authorization: Bearer" with nothing after it valid.
        if token is not None and not token.get_secret_value().strip():
            raise ValueError(
                "auth_token is empty: set a real token, or unset SAM2_STREAM_AUTH_TOKEN"
            )
        return token

    @property
    def ws_max_size(self) -> int:
        """Transport limit for one websocket message: above it the server closes the
        connection (1009); between `max_message_bytes` and this, the client gets an error."""
        return max(16 << 20, 4 * self.max_message_bytes)
