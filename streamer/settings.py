"""Service settings: one pydantic-settings class, read from `SAM2_STREAM_*` environment variables.

Built once in the app factory (or by `sam2-stream serve`) and passed to whatever needs it;
nothing else in the service reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, IPvAnyAddress, SecretStr
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

    # Model: config name or YAML path, checkpoint file, device ("cpu", "cuda", None = auto).
    model: str = "sam2.1_hiera_t"
    checkpoint: Path | None = None
    device: str | None = None
    # Compiled (torch.compile) video path of the official "vos_optimized" builder.
    vos_optimized: bool = False

    max_sessions: int = Field(default=8, ge=1)
    max_objects_per_session: int = Field(default=16, ge=1)

    # Bearer token for every endpoint except /healthz; None disables auth.
    auth_token: SecretStr | None = None

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

    @property
    def ws_max_size(self) -> int:
        """Transport limit for one websocket message: above it the server closes the
        connection (1009); between `max_message_bytes` and this, the client gets an error."""
        return max(16 << 20, 4 * self.max_message_bytes)
