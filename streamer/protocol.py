"""Websocket protocol, version 1: JSON messages discriminated by `"type"` (see docs/protocol.md).

Client -> server: `add_points`, `add_box`, `add_mask`, `remove_object`, `reset`, `auto_seed`,
`set_options`. Each may carry an `id` (string or int) that the reply (`ack` or `error`) echoes.
Server -> client: `hello` (on connect), `frame` (every processed frame), `ack`, `error`, `end`.

Coordinates are pixels of the source frame, (x, y) with the origin at the top-left corner.
Masks are COCO RLE (column-major, `counts` as a string) of the frame, or of the frame shrunk
by `mask_downscale` when a client asks for it (the RLE's `size` says which).
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

PROTOCOL_VERSION = 1

RequestId = int | str | None


class ErrorCode(str, enum.Enum):
    """Machine-readable `error.code` values."""

    BAD_MESSAGE = "bad_message"  # not JSON, not an object, or fields fail validation
    MESSAGE_TOO_LARGE = "message_too_large"  # above the server's max_message_bytes
    UNKNOWN_TYPE = "unknown_type"  # "type" missing or not a client message type
    UNSUPPORTED_VERSION = "unsupported_version"  # "v" other than 1
    UNKNOWN_SESSION = "unknown_session"
    UNKNOWN_OBJECT = "unknown_object"
    TOO_MANY_OBJECTS = "too_many_objects"
    OUT_OF_RANGE = "out_of_range"  # coordinates outside the frame, frame_idx not current
    NOT_READY = "not_ready"  # a prompt before the session's first frame
    SESSION_ENDED = "session_ended"  # the session was deleted or failed
    INTERNAL = "internal"  # an unexpected server error; the connection stays usable
    RATE_LIMITED = "rate_limited"  # too many expensive commands; retry after `retry_after` s


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION


class _Request(_Message):
    id: RequestId = None


# --- client -> server ------------------------------------------------------------------------


class CocoRle(BaseModel):
    """COCO run-length encoding: size [height, width], counts as pycocotools' string."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int]
    counts: str


Point = tuple[float, float]


class AddPoints(_Request):
    """Clicks on the current frame for `obj_id` (None: a new object).

    points: [[x, y], ...] pixels; labels: 1 positive / 0 negative, one per point.
    box: optional [x0, y0, x1, y1] given with the clicks. frame_idx: the frame the client
    clicked on; when given it must be the session's current frame (else `out_of_range`).
    clear_old_points: False adds to this frame's earlier clicks for the object.
    """

    type: Literal["add_points"]
    obj_id: int | None = None
    points: list[Point] = Field(min_length=1, max_length=64)
    labels: list[Literal[0, 1]]
    box: tuple[float, float, float, float] | None = None
    frame_idx: int | None = None
    clear_old_points: bool = True

    @model_validator(mode="after")
    def _same_length(self) -> AddPoints:
        if len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels")
        return self


class AddBox(_Request):
    """A box [x0, y0, x1, y1] (pixels) around `obj_id` on the current frame."""

    type: Literal["add_box"]
    obj_id: int | None = None
    box: tuple[float, float, float, float]
    frame_idx: int | None = None


class AddMask(_Request):
    """A mask for `obj_id` on the current frame, as COCO RLE at the frame's full size."""

    type: Literal["add_mask"]
    obj_id: int | None = None
    mask: CocoRle
    frame_idx: int | None = None


class RemoveObject(_Request):
    type: Literal["remove_object"]
    obj_id: int


class Reset(_Request):
    """Forget every object and frame (the next frame may have another size)."""

    type: Literal["reset"]


class AutoSeed(_Request):
    """Segment everything on the current frame and track what is not tracked yet (up to the
    session's object limit)."""

    type: Literal["auto_seed"]


class SetOptions(_Request):
    """Change this connection's output; fields left out keep their value."""

    type: Literal["set_options"]
    format: Literal["rle"] | None = None
    obj_ids: list[int] | None = None
    all_objects: bool = False  # True: clear an obj_ids filter
    max_fps: float | None = Field(default=None, gt=0)
    unlimited_fps: bool = False  # True: clear a max_fps limit
    mask_downscale: int | None = Field(default=None, ge=1, le=16)


ClientMessage = Annotated[
    AddPoints | AddBox | AddMask | RemoveObject | Reset | AutoSeed | SetOptions,
    Field(discriminator="type"),
]
PromptMessage = AddPoints | AddBox | AddMask | RemoveObject | Reset | AutoSeed
CLIENT_TYPES = (
    "add_points",
    "add_box",
    "add_mask",
    "remove_object",
    "reset",
    "auto_seed",
    "set_options",
)

_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


# --- server -> client ------------------------------------------------------------------------


class ObjectMasklet(BaseModel):
    """One object on one frame.

    rle: the mask (at 1/mask_downscale of the frame). bbox: [x, y, w, h] pixels of the full
    frame (zeros when empty). area: mask pixels at full resolution. score: presence
    probability (sigmoid of the object score logit). iou: the decoder's predicted IoU.
    """

    model_config = ConfigDict(frozen=True)

    obj_id: int
    rle: CocoRle
    bbox: tuple[float, float, float, float]
    area: int
    score: float
    iou: float


class Hello(_Message):
    type: Literal["hello"] = "hello"
    session_id: str
    source: str
    state: str
    obj_ids: list[int]
    frame_idx: int
    max_message_bytes: int
    max_objects: int
    options: dict[str, Any]


class FrameMessage(_Message):
    """Masklets of one processed frame.

    frame_idx: index in the session (0-based, frames the tracker saw). source_index: frame
    number in the source (gaps are frames dropped before inference). pts / time_base: the
    source's timestamp (seconds = pts * time_base), time_base as "num/den". capture_time:
    wall clock (Unix seconds) when the frame was decoded/received. latency: seconds from
    capture to the end of inference.
    """

    type: Literal["frame"] = "frame"
    frame_idx: int
    source_index: int
    pts: int | None
    time_base: str | None
    capture_time: float
    latency: float
    width: int
    height: int
    mask_downscale: int
    objects: list[ObjectMasklet]
    lost: list[int] = Field(default_factory=list)


class Ack(_Message):
    """Reply to a request: the refined masklets of the prompted (current) frame.

    obj_id: the object the request created or changed (None for reset/set_options).
    obj_ids: objects created (auto_seed).
    """

    type: Literal["ack"] = "ack"
    id: RequestId = None
    request: str
    frame_idx: int
    obj_id: int | None = None
    obj_ids: list[int] = Field(default_factory=list)
    objects: list[ObjectMasklet] = Field(default_factory=list)


class Error(_Message):
    type: Literal["error"] = "error"
    id: RequestId = None
    code: ErrorCode
    message: str
    retry_after: float | None = None  # seconds, with `rate_limited`


class End(_Message):
    """The stream ended: state "finished" (source done), "failed" or "closed" (deleted)."""

    type: Literal["end"] = "end"
    state: str
    error: str | None = None
    frames: int


ServerMessage = Hello | FrameMessage | Ack | Error | End


# --- parsing ---------------------------------------------------------------------------------


class ProtocolError(ValueError):
    """A client message that cannot be served; carries the `error` reply's code and id."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id

    def to_message(self) -> Error:
        return Error(id=self.request_id, code=self.code, message=str(self))


def parse_client_message(text: str | bytes, *, max_bytes: int) -> ClientMessage:
    """Decode and validate one client message; raises ProtocolError with the reply's code."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"message is {size} bytes; the limit is {max_bytes}"
        )
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message must be a JSON object")
    request_id = data.get("id")
    if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
        request_id = None
    version = data.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; use {PROTOCOL_VERSION}",
            request_id,
        )
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}",
            request_id,
        )
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or kind}: {err['msg']}"
            for err in exc.errors()
        )
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"invalid {kind}: {problems}", request_id
        ) from exc
