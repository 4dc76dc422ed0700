"""Compile that never surprises: buckets above 64 rows, a recompile limit that fits them,
loud failures, and a warm-up after which varied object and stream counts compile nothing.

Graph guards (what triggers a recompile) do not depend on the backend, so these tests trace
with dynamo's "eager" backend: the same recompiles as inductor without minutes of codegen.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import MICRO_CHECKPOINT
from torch._dynamo.utils import counters

from sam2_video.build import build_sam2
from sam2_video.compile import (
    VOS_OPTIMIZED,
    CompileFailedError,
    compile_model,
    compiled_parts,
    recompile_limit,
)
from sam2_video.predictors.multi_stream import track_streams
from sam2_video.predictors.streaming import SessionOptions, StreamingSession
from sam2_video.tracking.tracker import StaticShapes
from sam2_video.warmup import _frame, _mask, warm_up


def test_buckets_cover_batches_above_64_rows():
    static = StaticShapes()
    assert [static.bucket(n) for n in (1, 3, 64, 65, 128, 129)] == [1, 4, 64, 128, 128, 192]
    assert static.buckets_up_to(130) == (1, 2, 4, 8, 16, 32, 64, 128, 192)
    buckets = static.buckets_up_to(16 * 64)  # 64 streams of 16 objects
    assert recompile_limit(buckets) >= 3 * len(buckets)


def test_compile_model_raises_the_recompile_limit_to_fit_the_buckets():
    model = build_sam2("sam2.1_micro", device="cpu")
    buckets = StaticShapes().buckets_up_to(512)
    config = torch._dynamo.config
    previous = config.recompile_limit
    try:
        parts = compile_model(model, backend="eager", buckets=buckets)
        assert config.recompile_limit >= recompile_limit(buckets) > 16
        assert compiled_parts(model) is parts
        parts.restore()
        assert compiled_parts(model) is None
    finally:
        config.recompile_limit = previous


def _broken_backend(graph, example_inputs):
    raise RuntimeError("no compiler here")


def _attention_inputs():
    generator = torch.Generator().manual_seed(0)
    curr, curr_pos = torch.randn(2, 2, 256, 64, generator=generator)
    memory, memory_pos = torch.randn(2, 2, 256 + 8, 16, generator=generator)
    return curr, memory, curr_pos, memory_pos


def test_compile_failures_are_errors_or_refused(caplog):
    spec = next(spec for spec in VOS_OPTIMIZED if spec.name == "memory_attention")
    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")
    parts = compile_model(model, parts=[spec], backend=_broken_backend)
    with torch.inference_mode(), caplog.at_level(logging.ERROR, logger="sam2_video.compile"):
        model.memory_attention(*_attention_inputs(), num_obj_ptr_tokens=8)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "EAGERLY" in caplog.text and "no compiler here" in parts.status()["fallbacks"][spec.name]
    parts.restore()

    strict = compile_model(model, parts=[spec], backend=_broken_backend, on_failure="raise")
    with torch.inference_mode(), pytest.raises(CompileFailedError, match="memory_attention"):
        model.memory_attention(*_attention_inputs(), num_obj_ptr_tokens=8)
    strict.restore()
    with pytest.raises(ValueError, match="on_failure"):
        compile_model(model, on_failure="ignore")


def test_mask_decoder_is_static_as_the_official():
    spec = next(spec for spec in VOS_OPTIMIZED if spec.name == "sam_mask_decoder")
    assert spec.dynamic is False and "accuracy" in spec.reason


def _track(sessions: list[StreamingSession], t: int) -> None:
    if len(sessions) == 1:
        sessions[0].add_frame(_frame(t))
    else:
        track_streams(sessions, [_frame(t)] * len(sessions))


@pytest.mark.slow  # 1.2 min of CPU on an Intel Xeon (4 min wall on a busy 2-core machine)
def test_no_recompiles_after_warm_up_for_varied_objects_and_streams():
    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")
    max_objects, max_batch = 4, 2
    buckets = StaticShapes().buckets_up_to(max_objects * max_batch)
    parts = compile_model(model, backend="eager", buckets=buckets)
    try:
        report = warm_up(model, max_objects=max_objects, max_batch=max_batch)
        assert report.complete and report.fallbacks == {}
        assert report.shapes == [
            "prompts",
            "objects=1",
            "objects=2",
            "objects=2 streams=2",
            "objects=4",
            "objects=4 streams=2",
            "objects=8",
            "objects=8 streams=2",
        ]
        assert parts.status()["warmup"]["complete"]
        graphs = counters["stats"]["unique_graphs"]
        options = SessionOptions(static_shapes=True, max_objects=max_objects)
        with torch.compiler.set_stance("fail_on_recompile"):
            for counts in ([1], [3], [4], [2, 3], [4, 4], [1, 1], [3]):
                sessions = []
                for n in counts:
                    session = StreamingSession(model, options)
                    session.add_frame(_frame(0))
                    for k in range(n):
                        session.add_mask(None, _mask(k))
                    sessions.append(session)
                for t in range(1, 4):
                    _track(sessions, t)
                first = sessions[0]
                first.add_points(first.obj_ids[0], np.array([[20.0, 30.0]]), np.array([1]))
                if len(first.obj_ids) < max_objects:
                    first.add_points(None, np.array([[70.0, 30.0]]), np.array([1]))
                _track(sessions, 4)
        assert counters["stats"]["unique_graphs"] == graphs
        assert parts.fallbacks() == {}
    finally:
        parts.restore()


def test_warm_up_is_bounded_and_says_what_it_skipped():
    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")
    report = warm_up(model, max_objects=64, max_batch=4, time_budget=0.0)
    assert report.shapes == []  # the budget is checked before each shape
    assert not report.complete and report.skipped[0] == "prompts"
    assert report.skipped[-1] == "streams=4"
    assert "objects=256 streams=2" in report.skipped


def test_service_reports_fallbacks_and_the_warm_up(caplog):
    """What /readyz (`compile_status`) and /metrics show for a device whose part fell back."""
    from prometheus_client.parser import text_string_to_metric_families

    from streamer.service.metrics import compile_status, render_service_metrics
    from streamer.sessions import SessionManager
    from streamer.sessions.devices import DeviceSpec
    from streamer.settings import Settings

    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")
    spec = next(spec for spec in VOS_OPTIMIZED if spec.name == "memory_attention")
    parts = compile_model(model, parts=[spec], backend=_broken_backend)
    try:
        with caplog.at_level(logging.ERROR, logger="sam2_video.compile"):
            report = warm_up(model, max_objects=1, max_batch=1)
        assert report.complete and list(report.fallbacks) == ["memory_attention"]
        manager = SessionManager(models={DeviceSpec("cpu:0", "cpu"): model}, settings=Settings())
        status = compile_status(manager)
        assert list(status) == ["cpu:0"]
        assert list(status["cpu:0"]["fallbacks"]) == ["memory_attention"]
        assert status["cpu:0"]["warmup"]["shapes"] == ["prompts", "objects=1"]
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(render_service_metrics(manager))
            for sample in family.samples
            if sample.name.startswith("sam2_stream_compile")
        }
        assert samples["sam2_stream_compile_fallbacks"] == 1
        assert samples["sam2_stream_compile_warmup_complete"] == 1
        assert samples["sam2_stream_compile_warmup_seconds"] > 0
    finally:
        parts.restore()
