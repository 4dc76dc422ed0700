"""Websocket protocol models, the documented examples, mask encoding, subscriber queues and
metrics text: fast in-process checks (no server, no model)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pytest

from sam2_video import FrameResult
from streamer.protocol import (
    Ack,
    AddPoints,
    End,
    Error,
    ErrorCode,
    FrameMessage,
    Hello,
    ProtocolError,
    SetOptions,
    parse_client_message,
)
from streamer.results import decode_rle, downscale_mask, encode_rle, masklets
from streamer.service.metrics import histogram_family
from streamer.sessions.stats import Histogram, RateMeter
from streamer.sessions.subscribers import Subscriber
from streamer.settings import OutputOptions, Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
SERVER_MODELS = {"hello": Hello, "frame": FrameMessage, "ack": Ack, "error": Error, "end": End}


def _doc_examples() -> list[dict]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [json.loads(block) for block in blocks]


def test_every_documented_message_validates():
    examples = [e for e in _doc_examples() if "type" in e]
    seen = set()
    for example in examples:
        kind = example["type"]
        seen.add(kind)
        if kind in SERVER_MODELS:
            SERVER_MODELS[kind].model_validate(example)
        else:
            parse_client_message(json.dumps(example), max_bytes=1 << 20)
    assert seen == {
        "hello",
        "frame",
        "ack",
        "error",
        "end",
        "add_points",
        "add_box",
        "add_mask",
        "remove_object",
        "reset",
        "auto_seed",
        "detect",
        "set_options",
    }


def test_documented_mask_example_decodes():
    [example] = [e for e in _doc_examples() if e.get("type") == "add_mask"]
    message = parse_client_message(json.dumps(example), max_bytes=1 << 20)
    mask = decode_rle(message.mask)
    assert mask.sum() == 4 and mask[1:3, 1:3].all()


def test_parse_discriminates_on_type_and_defaults_version():
    message = parse_client_message(
        '{"type": "add_points", "points": [[1.5, 2]], "labels": [1]}', max_bytes=1024
    )
    assert isinstance(message, AddPoints)
    assert (message.v, message.obj_id, message.points, message.id) == (1, None, [(1.5, 2.0)], None)
    options = parse_client_message('{"type": "set_options", "mask_downscale": 2}', max_bytes=1024)
    assert isinstance(options, SetOptions) and options.mask_downscale == 2


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        ("{", ErrorCode.BAD_MESSAGE, None),
        ('"text"', ErrorCode.BAD_MESSAGE, None),
        ('{"id": "x"}', ErrorCode.UNKNOWN_TYPE, "x"),
        ('{"type": "frame", "id": 4}', ErrorCode.UNKNOWN_TYPE, 4),  # a server type
        ('{"type": "reset", "v": 3, "id": 1}', ErrorCode.UNSUPPORTED_VERSION, 1),
        ('{"type": "reset", "extra": 1, "id": 1}', ErrorCode.BAD_MESSAGE, 1),
        ('{"type": "add_points", "points": [], "labels": []}', ErrorCode.BAD_MESSAGE, None),
        ('{"type": "add_points", "points": [[1, 2]], "labels": [2]}', ErrorCode.BAD_MESSAGE, None),
        ('{"type": "add_box", "box": [1, 2, 3]}', ErrorCode.BAD_MESSAGE, None),
        ('{"type": "remove_object"}', ErrorCode.BAD_MESSAGE, None),
        ('{"type": "set_options", "mask_downscale": 0}', ErrorCode.BAD_MESSAGE, None),
        ('{"type": "reset", "pad": "' + "x" * 2000 + '"}', ErrorCode.MESSAGE_TOO_LARGE, None),
    ],
)
def test_bad_messages_raise_typed_errors(raw, code, request_id):
    with pytest.raises(ProtocolError) as error:
        parse_client_message(raw, max_bytes=1024)
    assert error.value.code is code
    reply = error.value.to_message()
    assert reply.type == "error" and reply.id == request_id and reply.message


def test_rle_round_trip_and_downscale():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6
    rle = encode_rle(mask)
    assert rle.size == (37, 53) and isinstance(rle.counts, str)
    np.testing.assert_array_equal(decode_rle(rle), mask)

    block = np.zeros((8, 12), bool)
    block[0:4, 0:6] = True
    small = downscale_mask(block, 2)
    assert small.shape == (4, 6) and small[:2, :3].all() and small.sum() == 6
    assert downscale_mask(np.ones((5, 5), bool), 2).shape == (3, 3)


def test_masklets_bbox_area_score_and_filter():
    masks = np.zeros((2, 10, 20), bool)
    masks[0, 2:5, 3:9] = True  # 3 rows x 6 cols
    result = FrameResult(
        frame_idx=4,
        pts=None,
        obj_ids=[7, 9],
        masks=masks,
        object_scores=np.array([3.0, -2.0], np.float32),
        ious=np.array([0.9, 0.1], np.float32),
        boxes=np.array([[3, 2, 8, 4], [0, 0, 0, 0]], np.float32),
    )
    first, second = masklets(result)
    assert (first.obj_id, first.bbox, first.area) == (7, (3.0, 2.0, 6.0, 3.0), 18)
    assert first.score == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert (second.bbox, second.area) == ((0.0, 0.0, 0.0, 0.0), 0)
    [only] = masklets(result, obj_ids=[9], mask_downscale=2)
    assert only.obj_id == 9 and only.rle.size == (5, 10)


def _frame_message(i: int) -> FrameMessage:
    return FrameMessage(
        frame_idx=i,
        source_index=i,
        pts=None,
        time_base=None,
        capture_time=0.0,
        latency=0.0,
        width=4,
        height=4,
        mask_downscale=1,
        objects=[],
    )


def test_live_subscriber_drops_oldest_frames_but_never_replies():
    async def body():
        loop = asyncio.get_running_loop()
        subscriber = Subscriber(loop=loop, options=OutputOptions(), max_pending=2)
        for i in range(5):
            subscriber.offer(_frame_message(i))
        subscriber.offer(Ack(id=1, request="reset", frame_idx=4))
        subscriber.offer(_frame_message(5))
        got = [await subscriber.get(timeout=1) for _ in range(3)]
        subscriber.close()
        assert await subscriber.get(timeout=1) is None
        return got, subscriber

    got, subscriber = asyncio.run(body())
    assert [m.type for m in got] == ["frame", "ack", "frame"]
    assert [got[0].frame_idx, got[2].frame_idx] == [4, 5]
    assert subscriber.dropped == 4 and subscriber.frames_in_flight == 0


def test_batch_subscriber_keeps_every_frame_and_counts_in_flight():
    drained = []

    async def body():
        loop = asyncio.get_running_loop()
        subscriber = Subscriber(
            loop=loop,
            options=OutputOptions(),
            max_pending=2,
            drop_frames=False,
            on_drain=lambda: drained.append(1),
        )
        for i in range(4):
            subscriber.offer(_frame_message(i))
        assert subscriber.frames_in_flight == 4  # counted at once, before the loop runs
        got = [(await subscriber.get(timeout=1)).frame_idx for _ in range(4)]
        assert await subscriber.get(timeout=0.01) is None  # empty, still open: times out
        return got, subscriber

    got, subscriber = asyncio.run(body())
    assert got == [0, 1, 2, 3] and subscriber.dropped == 0
    assert subscriber.frames_in_flight == 0 and len(drained) == 4


def test_histogram_renders_in_the_prometheus_format():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    hist = Histogram(buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 3.0):
        hist.observe(value)

    class Collector:
        def collect(self):
            yield histogram_family("lat_seconds", "latency", ["session"], [(['a"b'], hist)])

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    text = generate_latest(registry).decode()
    (family,) = text_string_to_metric_families(text)  # the official parser reads it back
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert family.type == "histogram"
    assert samples[("lat_seconds_bucket", "0.1")] == 1
    assert samples[("lat_seconds_bucket", "1.0")] == 2
    assert samples[("lat_seconds_bucket", "+Inf")] == 3
    assert samples[("lat_seconds_count", None)] == 3
    assert samples[("lat_seconds_sum", None)] == pytest.approx(3.55)
    assert all(s.labels["session"] == 'a"b' for s in family.samples)


def test_rate_meter_uses_its_window():
    meter = RateMeter(("a",), window=5.0)
    assert meter.rates() == {"a": 0.0}
    meter.sample((0,), now=0.0)
    meter.sample((10,), now=2.0)
    assert meter.rates()["a"] == pytest.approx(5.0)
    meter.sample((40,), now=12.0)  # the first sample fell out of the window
    assert meter.rates()["a"] == pytest.approx(3.0)


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("SAM2_STREAM_MAX_SESSIONS", "3")
    monkeypatch.setenv("SAM2_STREAM_ICE_HOSTS", '["127.0.0.1"]')
    monkeypatch.setenv("SAM2_STREAM_AUTH_TOKEN", "s3cret")
    monkeypatch.setenv("SAM2_STREAM_DEFAULT_OUTPUT", '{"mask_downscale": 2}')
    settings = Settings(port=9000)
    assert (settings.max_sessions, settings.port, settings.ice_hosts) == (3, 9000, ["127.0.0.1"])
    assert settings.auth_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.default_output.mask_downscale == 2
