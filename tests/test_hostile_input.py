"""Hostile client input, in process (no server, no model): bounded JSON, strict fields, RLE
validation before any decoding, clipped error texts, and the subscriber's overflow policy.
Issue 9, items 1, 2, 5, 8 and 10 (the live-server versions are in test_hardening.py)."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import numpy as np
import pytest

from streamer.protocol import (
    Ack,
    AddMask,
    CocoRle,
    Error,
    ErrorCode,
    FrameMessage,
    ProtocolError,
    parse_client_message,
)
from streamer.results import RleError, decode_rle, encode_rle, rle_runs
from streamer.safejson import MAX_ECHO_BYTES, nesting_depth
from streamer.sessions.subscribers import Subscriber
from streamer.settings import OutputOptions

MAX = 1 << 20


def _error(raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw, max_bytes=MAX)
    return info.value


# --- item 1 and 8: masks are validated before they are decoded --------------------------------


@pytest.mark.parametrize("size", [[268435456, 4], [2**31, 4], [1 << 20, 1 << 20]])
def test_oversized_mask_is_refused_without_allocating(size):
    raw = json.dumps({"type": "add_mask", "id": 1, "mask": {"size": size, "counts": "0"}})
    tracemalloc.start()
    try:
        error = _error(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.code is ErrorCode.BAD_MESSAGE and error.request_id == 1
    assert "above the limit" in str(error)
    assert peak < 1 << 20  # the probe allocated 2 GiB to 17 GiB before


@pytest.mark.parametrize("counts", ["", "0", "1", "x", "5220", "52203?", "\u0000", "o", "5220ooo"])
def test_malformed_counts_are_refused(counts):
    raw = json.dumps({"type": "add_mask", "mask": {"size": [4, 4], "counts": counts}})
    assert _error(raw).code is ErrorCode.BAD_MESSAGE
    with pytest.raises(RleError):
        decode_rle(CocoRle(size=(4, 4), counts=counts))


def test_valid_rles_round_trip_through_the_validator():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((h, w)) < rng.random()
        rle = encode_rle(mask)
        assert int(rle_runs(rle.size, rle.counts, max_pixels=h * w).sum()) == h * w
        assert (decode_rle(rle) == mask).all()
    message = parse_client_message(
        '{"type": "add_mask", "mask": {"size": [4, 4], "counts": "52203"}}', max_bytes=MAX
    )
    assert isinstance(message, AddMask)


# --- item 5: JSON depth and number length give a typed error, not a dropped connection -------


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "reset", "id": ' + "9" * 4301 + "}",
        "[" * 1000 + "]" * 1000,
        '{"type": "add_points", "points": ' + "[" * 5000,
        '{"type": "add_box", "box": [1, 2, 3, 1e999]}',
        '{"type": "add_box", "box": [1, 2, 3, NaN]}',
        '{"type": "add_box", "box": [1, 2, 3, -Infinity]}',
        b"\xff\xfe{}",
    ],
)
def test_json_limits_and_non_finite_numbers_are_bad_message(raw):
    assert _error(raw).code is ErrorCode.BAD_MESSAGE


def test_depth_ignores_brackets_inside_strings():
    assert nesting_depth('{"a": "[[[[[[{{{{"}') == 1
    assert nesting_depth('[[1], {"b": [2]}]') == 3


# --- item 10: no coercion, no negative frame index -------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "add_box", "box": [1, 2, 3, 4], "frame_idx": -1}',
        '{"type": "add_box", "box": [1, 2, 3, 4], "obj_id": true}',
        '{"type": "add_box", "box": [1, 2, 3, 4], "obj_id": "3"}',
        '{"type": "add_box", "box": [1, 2, 3, 4], "id": true}',
        '{"type": "add_box", "box": [true, 2, 3, 4]}',
        '{"type": "add_points", "points": [[1, 2]], "labels": [true]}',
        '{"type": "add_points", "points": [[1, 2]], "labels": [1], "clear_old_points": 1}',
        '{"type": "remove_object", "obj_id": 1.0}',
        '{"type": "add_points", "points": '
        + json.dumps([[1, 1]] * 65)
        + ', "labels": '
        + json.dumps([1] * 65)
        + "}",
    ],
)
def test_strict_fields(raw):
    error = _error(raw)
    assert error.code is ErrorCode.BAD_MESSAGE
    assert error.request_id is None  # `true` is never echoed back as the id 1


# --- echo: error texts quote at most ~100 bytes of input -------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"type": "x" * 900_000}),
        json.dumps({"type": "reset", "k" * 50_000: 1}),
        json.dumps({"type": "reset", "v": "y" * 50_000}),
        json.dumps({"type": "reset", "id": "i" * 50_000}),
        json.dumps({"type": "add_box", "box": ["z" * 50_000, 1, 2, 3]}),
    ],
)
def test_error_texts_do_not_echo_the_input(raw):
    error = _error(raw)
    assert len(str(error).encode()) < 3 * MAX_ECHO_BYTES + 200
    assert error.request_id is None or len(str(error.request_id)) <= 128


# --- item 2: a subscriber's replies are bounded too ------------------------------------------


def _frame(i: int) -> FrameMessage:
    return FrameMessage(
        frame_idx=i, source_index=i, pts=None, time_base=None, capture_time=0.0, latency=0.0,
        width=4, height=4, mask_downscale=1, objects=[],
    )  # fmt: skip


def test_replies_past_the_budget_close_the_subscriber_and_drop_the_backlog():
    async def body():
        loop = asyncio.get_running_loop()
        overflowed = []
        sub = Subscriber(loop=loop, options=OutputOptions(), max_pending=2, max_replies=4)
        sub.on_overflow = lambda: overflowed.append(True)
        for i in range(5):
            sub.put_nowait(_frame(i))
        assert sub.dropped == 3  # frames: the oldest go first
        assert sub.reserve_reply() and sub.reserve_reply()
        sub.offer(Ack(request="add_box", frame_idx=0), reply=True)  # a reply frees its slot
        await asyncio.sleep(0)
        sub.put_nowait(Error(code=ErrorCode.BAD_MESSAGE, message="1"))
        sub.put_nowait(Error(code=ErrorCode.BAD_MESSAGE, message="2"))
        assert not sub.closed  # 1 reserved + 3 queued = 4: at the limit, not over
        assert not sub.reserve_reply()  # the fifth: over the budget
        assert sub.overflowed and sub.closed and overflowed == [True]
        assert sub.frames_in_flight == 0  # dropped frames release a paused batch worker
        assert await sub.get(timeout=1) is None  # the backlog is gone

    asyncio.run(asyncio.wait_for(body(), 10))
