"""`vos_optimized`: compiled parts give eager results, and steady-state frames never recompile."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import MICRO_CHECKPOINT
from torch._dynamo.utils import counters

from sam2_video import SessionOptions, StreamingSession
from sam2_video.build import build_sam2
from sam2_video.compile import VOS_OPTIMIZED, compile_model

H, W = 96, 128
COMPILED_STATIC = ("memory_attention", "sam_mask_decoder", "memory_encoder")


def _frame(t: int) -> np.ndarray:
    img = np.full((H, W, 3), 50, np.uint8)
    for k in range(4):
        x = 8 + 30 * k + t
        img[30 : 30 + 20, x : x + 18] = (40 + 50 * k, 210 - 40 * k, 90 + 30 * k)
    return img


def _mask(k: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[30 : 30 + 20, 8 + 30 * k : 26 + 30 * k] = True
    return mask


def _session(model, num_objects: int) -> StreamingSession:
    session = StreamingSession(model, SessionOptions(return_logits=True, static_shapes=True))
    session.add_frame(_frame(0))
    for k in range(num_objects):
        session.add_mask(None, _mask(k))
    return session


def _assert_same_result(compiled, eager) -> None:
    np.testing.assert_array_equal(compiled.masks, eager.masks)
    np.testing.assert_allclose(compiled.logits, eager.logits, atol=1e-3, rtol=0)
    np.testing.assert_allclose(compiled.object_scores, eager.object_scores, atol=1e-3, rtol=0)


def _compiled_matches_eager_without_recompiles(device: str) -> None:
    eager_model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device=device)
    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device=device)
    parts = compile_model(model)
    compiled, eager = _session(model, 2), _session(eager_model, 2)
    for t in (1, 2):  # warm-up: commit the prompts' memory, then track
        _assert_same_result(compiled.add_frame(_frame(t)), eager.add_frame(_frame(t)))
    graphs = counters["stats"]["unique_graphs"]
    # Steady state: any recompile raises (and the part would fall back to eager).
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in (3, 4, 5):
            _assert_same_result(compiled.add_frame(_frame(t)), eager.add_frame(_frame(t)))
    assert parts.fallbacks() == {}
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow
def test_compiled_matches_eager_cpu():
    _compiled_matches_eager_without_recompiles("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_matches_eager_cuda():
    _compiled_matches_eager_without_recompiles("cuda")


def test_static_shapes_fix_every_input_shape(micro_model):
    """Why steady state does not recompile: the compiled parts see the same shapes every frame,
    and 3 or 4 objects share the batch bucket of 4."""
    seen: dict[str, set] = {name: set() for name in COMPILED_STATIC}

    def record(name):
        def hook(module, args, kwargs):
            shapes = tuple(
                (tuple(v.shape), tuple(v.stride())) if isinstance(v, torch.Tensor) else v
                for v in (*args, *kwargs.values())
                if not isinstance(v, list)
            )
            seen[name].add(shapes)

        return hook

    sessions = [_session(micro_model, 3), _session(micro_model, 4)]
    for session in sessions:
        session.add_frame(_frame(1))  # commits the prompts (memory encoder batch 3 / 4 -> 4)
    handles = [
        getattr(micro_model, name).register_forward_pre_hook(record(name), with_kwargs=True)
        for name in seen
    ]
    try:
        for t in (2, 3):
            for session in sessions:
                session.add_frame(_frame(t))
    finally:
        for handle in handles:
            handle.remove()
    assert {name: len(shapes) for name, shapes in seen.items()} == dict.fromkeys(seen, 1)


def _broken_backend(graph, example_inputs):
    raise RuntimeError("no compiler here")


def test_compile_failure_falls_back_to_eager(caplog):
    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")
    attention = model.memory_attention
    spec = next(spec for spec in VOS_OPTIMIZED if spec.name == "memory_attention")
    parts = compile_model(model, parts=[spec], backend=_broken_backend)
    generator = torch.Generator().manual_seed(0)
    curr, curr_pos = torch.randn(2, 2, 256, 64, generator=generator)
    memory, memory_pos = torch.randn(2, 2, 256 + 8, 16, generator=generator)
    with torch.inference_mode():
        with caplog.at_level(logging.WARNING, logger="sam2_video.compile"):
            out = attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=8)
        assert "memory_attention" in caplog.text
        assert list(parts.fallbacks()) == ["memory_attention"]
        parts.restore()
        assert "forward" not in attention.__dict__
        expected = attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=8)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_input_errors_are_not_compile_failures():
    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")
    spec = next(spec for spec in VOS_OPTIMIZED if spec.name == "memory_attention")
    parts = compile_model(model, parts=[spec], backend="eager")
    curr = torch.zeros(2, 256, 64)
    memory = torch.zeros(3, 256, 16)  # batch mismatch: the eager forward raises ValueError
    with torch.inference_mode(), pytest.raises(ValueError, match="batch"):
        model.memory_attention(curr, memory, curr, memory)
    assert parts.fallbacks() == {}
    parts.restore()


def test_compile_model_validates_parts():
    model = build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")
    parts = compile_model(model, backend="eager")
    # On the CPU the image encoder's eager kernels beat its compiled graph: it stays eager.
    assert parts.names == [spec.name for spec in VOS_OPTIMIZED if spec.name != "image_encoder"]
    assert "forward" not in model.image_encoder.__dict__
    assert all(spec.reason for spec in VOS_OPTIMIZED)
    with pytest.raises(ValueError, match="already compiled"):
        compile_model(model, backend="eager")
    parts.restore()
    assert all("forward" not in getattr(model, name).__dict__ for name in parts.names)
    bogus = VOS_OPTIMIZED[0].__class__(name="no_such_part", dynamic=False, reason="test")
    with pytest.raises(ValueError, match="no_such_part"):
        compile_model(model, parts=[bogus])
