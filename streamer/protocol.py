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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from streamer.rle import DEFAULT_MAX_MASK_PIXELS, RleError, rle_runs
from streamer.safejson import MAX_ECHO_BYTES, JsonLimitError, clip, load_bounded

PROTOCOL_VERSION: Literal[1] = 1

# Client fields are strict: JSON `true` is not the id 1, "3" is not the object 3.
MAX_ID_CHARS = 128
RequestId = StrictInt | Annotated[StrictStr, Field(max_length=MAX_ID_CHARS)] | None
ObjectId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
FrameIndex = Annotated[StrictInt, Field(ge=0)]
# A coordinate in pixels: finite (no NaN / Infinity), int or float, never a bool.
Coord = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Label = Annotated[StrictInt, Field(ge=0, le=1)]
Box = tuple[Coord, Coord, Coord, Coord]
# Prompt size caps: clicks per add_points (one box rides along with them).
MAX_POINTS_PER_PROMPT = 64


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
    NO_DETECTOR = "no_detector"  # `detect` on a server started without --detector
    DETECTION_FAILED = "detection_failed"  # the detector raised; the stream goes on
    FORBIDDEN = "forbidden"  # a viewer token sent a prompt (it may only watch)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION


class _Request(_Message):
    id: RequestId = None


# --- client -> server ------------------------------------------------------------------------


class CocoRle(BaseModel):
    """COCO run-length encoding: size [height, width], counts as pycocotools' string."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[StrictInt, StrictInt]
    counts: StrictStr


Point = tuple[Coord, Coord]


class AddPoints(_Request):
    """Clicks on the current frame for `obj_id` (None: a new object).

    points: [[x, y], ...] pixels; labels: 1 positive / 0 negative, one per point.
    box: optional [x0, y0, x1, y1] given with the clicks. frame_idx: the frame the client
    clicked on; when given it must be the session's current frame (else `out_of_range`).
    clear_old_points: False adds to this frame's earlier clicks for the object.
    """

    type: Literal["add_points"]
    obj_id: ObjectId | None = None
    points: list[Point] = Field(min_length=1, max_length=MAX_POINTS_PER_PROMPT)
    labels: list[Label] = Field(max_length=MAX_POINTS_PER_PROMPT)
    box: Box | None = None
    frame_idx: FrameIndex | None = None
    clear_old_points: StrictBool = True

    @model_validator(mode="after")
    def _same_length(self) -> AddPoints:
        if len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels")
        return self


class AddBox(_Request):
    """A box [x0, y0, x1, y1] (pixels) around `obj_id` on the current frame."""

    type: Literal["add_box"]
    obj_id: ObjectId | None = None
    box: Box
    frame_idx: FrameIndex | None = None


class AddMask(_Request):
    """A mask for `obj_id` on the current frame, as COCO RLE at the frame's full size."""

    type: Literal["add_mask"]
    obj_id: ObjectId | None = None
    mask: CocoRle
    frame_idx: FrameIndex | None = None


class RemoveObject(_Request):
    type: Literal["remove_object"]
    obj_id: ObjectId


class Reset(_Request):
    """Forget every object and frame (the next frame may have another size)."""

    type: Literal["reset"]


class AutoSeed(_Request):
    """Segment everything on the current frame and track what is not tracked yet (up to the
    session's object limit)."""

    type: Literal["auto_seed"]


class DetectOptions(BaseModel):
    """Detector seeding: what to look for, how often, and when a detection is a tracked object.

    classes: class names to keep (YOLO) or look for (text detectors); text: a text prompt
    such as "person. car." (text detectors). every_n_frames: run again on every frame whose
    index is a multiple of it; 0 = the current (or first) frame only. min_score: detections
    below it are ignored. iou: a detection whose box overlaps a tracked object's box with at
    least this IoU is that object (it keeps its id); the others become new objects.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[Annotated[StrictStr, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=256
    )
    text: Annotated[StrictStr, Field(max_length=1024)] | None = None
    every_n_frames: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 0
    min_score: Annotated[float, Strict(), Field(ge=0.0, le=1.0)] = 0.25
    iou: Annotated[float, Strict(), Field(gt=0.0, le=1.0)] = 0.5

    @model_validator(mode="after")
    def _text_not_blank(self) -> DetectOptions:
        if self.text is not None and not any(c.isalnum() for c in self.text):
            raise ValueError("text names no class (e.g. 'person. car.')")
        return self


class Detect(_Request, DetectOptions):
    """Run the server's detector on the current frame and track what it finds; with
    `every_n_frames` > 0, also on later frames (replacing earlier `detect` settings)."""

    type: Literal["detect"]


class SetOptions(_Request):
    """Change this connection's output; fields left out keep their value."""

    type: Literal["set_options"]
    format: Literal["rle"] | None = None
    obj_ids: list[ObjectId] | None = Field(default=None, max_length=1024)
    all_objects: StrictBool = False  # True: clear an obj_ids filter
    max_fps: Coord | None = Field(default=None, gt=0)
    unlimited_fps: StrictBool = False  # True: clear a max_fps limit
    mask_downscale: Annotated[StrictInt, Field(ge=1, le=16)] | None = None


ClientMessage = Annotated[
    AddPoints | AddBox | AddMask | RemoveObject | Reset | AutoSeed | Detect | SetOptions,
    Field(discriminator="type"),
]
PromptMessage = AddPoints | AddBox | AddMask | RemoveObject | Reset | AutoSeed | Detect
CLIENT_TYPES = (
    "add_points",
    "add_box",
    "add_mask",
    "remove_object",
    "reset",
    "auto_seed",
    "detect",
    "set_options",
)

_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


# --- server -> client ------------------------------------------------------------------------


class ObjectMasklet(BaseModel):
    """One object on one frame.

    rle: the mask (at 1/mask_downscale of the frame). bbox: [x, y, w, h] pixels of the full
    frame (zeros when empty). area: mask pixels at full resolution. score: presence
    probability (sigmoid of the object score logit). iou: the decoder's predicted IoU.
    label, class_id, det_score: the class name, class id and score of the detection that
    seeded the object (or last matched it); None for objects no detector found.
    """

    model_config = ConfigDict(frozen=True)

    obj_id: int
    rle: CocoRle
    bbox: tuple[float, float, float, float]
    area: int
    score: float
    iou: float
    label: str | None = None
    class_id: int | None = None
    det_score: float | None = None


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
        """The `error` message that answers the failed request."""
        return Error(id=self.request_id, code=self.code, message=str(self))


def _problems(kind: str, exc: ValidationError, limit: int = 3) -> str:
    """The validation errors as "field: reason; ...", client text clipped (no input echo)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:limit]:
        where = ".".join(str(p)[:40] for p in err["loc"][1:])
        parts.append(f"{where or kind}: {err['msg'][:MAX_ECHO_BYTES]}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _encodable(data: object) -> bool:
    """True when every string of the decoded JSON `data` encodes as UTF-8."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_client_message(
    text: str | bytes, *, max_bytes: int, max_mask_pixels: int = DEFAULT_MAX_MASK_PIXELS
) -> ClientMessage:
    """Decode and validate one client message; raises ProtocolError with the reply's code.

    Bounded: the size is checked before parsing, JSON depth and number length are capped
    (`streamer.safejson`), non-finite numbers are refused, an `add_mask` RLE is checked
    (size at most `max_mask_pixels`, well-formed counts covering the size) without being
    decoded, and error messages quote at most ~100 bytes of the input.
    """
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > max_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"message is {size} bytes; the limit is {max_bytes}"
        )
    try:
        data = load_bounded(text)
    except JsonLimitError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message must be a JSON object")
    if not _encodable(data):
        # JSON escapes can spell lone surrogates ("\\ud800"), which no reply could carry.
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, "the message holds text that is not valid Unicode (a lone "
            "surrogate); its id cannot be echoed"
        )  # fmt: skip
    request_id = data.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
        request_id = None
    elif isinstance(request_id, str) and len(request_id) > MAX_ID_CHARS:
        request_id = None  # never echo a huge id
    version = data.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {clip(version)} is not supported; use {PROTOCOL_VERSION}",
            request_id,
        )
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {clip(kind)}; expected one of {', '.join(CLIENT_TYPES)}",
            request_id,
        )
    try:
        message = _client_adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"invalid {kind}: {_problems(kind, exc)}", request_id
        ) from None
    if isinstance(message, AddMask):
        try:
            rle_runs(message.mask.size, message.mask.counts, max_pixels=max_mask_pixels)
        except RleError as exc:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE, f"invalid add_mask: {exc}", request_id
            ) from exc
    return message
