"""Cross-stream batching: frames of several sessions in one forward give the solo results."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from sam2_video.predictors.multi_stream import track_streams
from sam2_video.predictors.streaming import FrameSizeError, SessionOptions, StreamingSession

CLIP = Path(__file__).parent / "data" / "bedroom.mp4"
FRAMES = 6
# Batched and solo runs round differently in float32 on CPU: a Linear layer gives results that
# differ in the last bit for 1 and 3 rows of identical input (MKL picks other kernels by
# shape), and the memory recurrence amplifies that frame after frame. Measured: at most 1.1e-5
# on the first tracked frame, 1.8e-4 after six frames (logits of magnitude up to ~20). A wiring
# error (a row attending to another row's memory or frame) shows up as differences of order 1.
LOGITS_ATOL = 1e-3


def _decode(start: int, count: int, hw: tuple[int, int]) -> list[np.ndarray]:
    frames = []
    with av.open(str(CLIP)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(cv2.resize(rgb, hw[::-1], interpolation=cv2.INTER_AREA))
            if len(frames) == count:
                break
    return frames


def _boxes_clip(count: int) -> list[np.ndarray]:
    frames = []
    for t in range(count):
        img = np.full((96, 128, 3), 40, np.uint8)
        img[20:50, 10 + 2 * t : 40 + 2 * t] = (200, 60, 60)
        img[55:85, 70 - t : 110 - t] = (60, 200, 90)
        frames.append(img)
    return frames


@pytest.fixture(scope="module")
def clips() -> list[list[np.ndarray]]:
    """Three different streams: two parts of a real clip at two sizes, and a synthetic one."""
    return [_decode(0, FRAMES, (180, 320)), _decode(120, FRAMES, (144, 256)), _boxes_clip(FRAMES)]


# Prompts per stream: {frame index: [(obj_id or None, kind, payload)]}; different object counts
# (1, 3, 2) and prompt times (stream 2 gets its first object on frame 2).
PROMPTS = [
    {0: [(None, "points", ([[160, 90]], [1]))]},
    {
        0: [(None, "box", [40, 30, 120, 110]), (None, "points", ([[200, 60]], [1]))],
        3: [(None, "points", ([[60, 100], [70, 110]], [1, 0]))],
    },
    {
        2: [(None, "mask", (slice(20, 50), slice(14, 44)))],
        4: [(None, "points", ([[90, 70]], [1])), (1, "points", ([[30, 30]], [1]))],
    },
]


def _apply_prompts(session: StreamingSession, prompts, t: int) -> None:
    for obj_id, kind, payload in prompts.get(t, []):
        if kind == "points":
            points, labels = payload
            session.add_points(obj_id, np.array(points, np.float32), np.array(labels, np.int32))
        elif kind == "box":
            session.add_box(obj_id, np.array(payload, np.float32))
        else:
            mask = np.zeros(session.frame_hw, bool)
            mask[payload] = True
            session.add_mask(obj_id, mask)


def _options() -> SessionOptions:
    return SessionOptions(return_logits=True)


def test_batched_streams_equal_solo_on_every_frame(micro_model, clips):
    solo = [StreamingSession(micro_model, _options()) for _ in clips]
    batched = [StreamingSession(micro_model, _options()) for _ in clips]
    encoder_calls = []
    hook = micro_model.image_encoder.register_forward_hook(
        lambda module, args, out: encoder_calls.append(args[0].shape[0])
    )
    try:
        for t in range(FRAMES):
            encoder_calls.clear()
            expected = [s.add_frame(clip[t], pts=t) for s, clip in zip(solo, clips)]
            assert encoder_calls == [1, 1, 1]
            encoder_calls.clear()
            results = track_streams(batched, [clip[t] for clip in clips], pts=[t] * 3)
            assert encoder_calls == [3]  # one encoder forward for the three streams
            for want, got in zip(expected, results):
                assert got.frame_idx == want.frame_idx == t and got.pts == t
                assert got.obj_ids == want.obj_ids
                if want.obj_ids:
                    np.testing.assert_allclose(got.logits, want.logits, atol=LOGITS_ATOL, rtol=0)
                    # Masks agree wherever the logit is not within rounding noise of 0.
                    clear = np.abs(want.logits) > LOGITS_ATOL
                    np.testing.assert_array_equal(got.masks[clear], want.masks[clear])
                np.testing.assert_allclose(
                    got.object_scores, want.object_scores, atol=LOGITS_ATOL, rtol=0
                )
            for s_solo, s_batched, prompts in zip(solo, batched, PROMPTS):
                _apply_prompts(s_solo, prompts, t)
                _apply_prompts(s_batched, prompts, t)
    finally:
        hook.remove()
    assert [len(s.obj_ids) for s in batched] == [1, 3, 2]


def test_a_bad_frame_fails_only_its_session(micro_model, clips):
    sessions = [StreamingSession(micro_model, _options()) for _ in range(2)]
    track_streams(sessions, [clips[0][0], clips[2][0]])
    sessions[0].add_points(None, np.array([[160, 90]], np.float32), np.array([1], np.int32))
    wrong_size = clips[1][1]
    results = track_streams(sessions, [wrong_size, clips[2][1]])
    assert isinstance(results[0], FrameSizeError)
    assert results[1].frame_idx == 1
    assert sessions[0].frame_idx == 0  # unchanged: the next good frame goes on from there
    results = track_streams(sessions, [clips[0][1], clips[2][2]])
    assert [r.frame_idx for r in results] == [1, 2]
    assert results[0].masks.shape == (1, 180, 320)


def test_sessions_of_one_step_share_options(micro_model, clips):
    a = StreamingSession(micro_model, SessionOptions(fill_hole_area=0))
    b = StreamingSession(micro_model, SessionOptions(fill_hole_area=8))
    with pytest.raises(ValueError, match="share"):
        track_streams([a, b], [clips[0][0], clips[0][0]])
    with pytest.raises(ValueError, match="twice"):
        track_streams([a, a], [clips[0][0], clips[0][0]])


def test_sliced_auto_seed_equals_auto_seed(micro_model, clips):
    from sam2_video.predictors.auto_seed import AutoSeedOptions

    options = AutoSeedOptions(points_per_side=8, points_per_batch=16)
    whole = StreamingSession(micro_model)
    sliced = StreamingSession(micro_model)
    whole.add_frame(clips[0][0])
    sliced.add_frame(clips[0][0])
    want = whole.auto_seed(options)
    steps = sliced.auto_seed_steps(options)
    slices = 0
    with torch.inference_mode():
        while True:
            try:
                next(steps)
                slices += 1
            except StopIteration as done:
                got = done.value
                break
    assert slices == 1 + 64 // 16  # one image embedding, then one slice per point batch
    assert got.obj_ids == want.obj_ids and len(got.obj_ids) > 0
    np.testing.assert_array_equal(got.masks, want.masks)


def test_static_shapes_pad_the_frame_batch(micro_model, clips):
    """With static shapes (compiled models) 3 frames run as a batch of 4; results unchanged."""
    options = SessionOptions(static_shapes=True, return_logits=True)
    solo = [StreamingSession(micro_model, options) for _ in clips]
    batched = [StreamingSession(micro_model, options) for _ in clips]
    sizes = []
    hook = micro_model.image_encoder.register_forward_hook(
        lambda module, args, out: sizes.append(args[0].shape[0])
    )
    try:
        for t in range(3):
            expected = [s.add_frame(clip[t]) for s, clip in zip(solo, clips)]
            sizes.clear()
            results = track_streams(batched, [clip[t] for clip in clips])
            assert sizes == [4]
            for want, got in zip(expected, results):
                assert got.obj_ids == want.obj_ids
                if want.obj_ids:
                    np.testing.assert_allclose(got.logits, want.logits, atol=LOGITS_ATOL, rtol=0)
            for s_solo, s_batched, prompts in zip(solo, batched, PROMPTS):
                _apply_prompts(s_solo, prompts, t)
                _apply_prompts(s_batched, prompts, t)
    finally:
        hook.remove()


def test_add_frame_is_the_service_step_with_one_session(micro_model, clips):
    """`add_frame` and the scheduler's call (`track_streams` with one session, seeding left
    to the caller) are one path: identical logits, bit for bit, with prompts in between."""
    by_add_frame = StreamingSession(micro_model, _options())
    by_step = StreamingSession(micro_model, _options())
    for t in range(FRAMES):
        want = by_add_frame.add_frame(clips[1][t], pts=t)
        [got] = track_streams([by_step], [clips[1][t]], [t], seed=False)
        assert got.obj_ids == want.obj_ids and got.frame_idx == want.frame_idx == t
        if want.obj_ids:
            np.testing.assert_array_equal(got.logits, want.logits)
            np.testing.assert_array_equal(got.masks, want.masks)
        _apply_prompts(by_add_frame, PROMPTS[1], t)
        _apply_prompts(by_step, PROMPTS[1], t)
    assert len(by_step.obj_ids) == 3


def test_a_failed_prompt_registers_no_object(micro_model, clips):
    session = StreamingSession(micro_model)
    session.add_frame(clips[0][0])
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("device error inside the model")

    session.tracker.prompt_points = broken
    with pytest.raises(RuntimeError, match="device error"):
        session.add_points(None, np.array([[160, 90]], np.float32), np.array([1], np.int32))
    assert calls == [1] and session.obj_ids == []
    del session.tracker.prompt_points  # the class's method again
    result = session.add_points(None, np.array([[160, 90]], np.float32), np.array([1], np.int32))
    assert result.obj_ids == [1]  # the failed prompt used up no id


def test_the_frame_is_kept_only_when_seeding_may_need_it(micro_model, clips):
    keeps = StreamingSession(micro_model)
    keeps.add_frame(clips[0][0])
    assert keeps._frame is not None and keeps._frame.shape == (3, 180, 320)
    lean = StreamingSession(micro_model, SessionOptions(seed_on_demand=False))
    lean.add_frame(clips[0][0])
    assert lean._frame is None
    with pytest.raises(RuntimeError, match="keeps no frame"):
        lean.auto_seed()


def test_masks_at_a_smaller_size_come_from_the_low_res_logits(micro_model, clips):
    session = StreamingSession(micro_model, SessionOptions(return_logits=True))
    session.add_frame(clips[0][0])
    result = session.add_points(None, np.array([[160, 90]], np.float32), np.array([1], np.int32))
    assert result.low_res_logits.shape == (1, 64, 64)
    small = result.masks_at((45, 80))
    assert small.shape == (1, 45, 80) and small.any()
    # The same masks as an area downscale of the frame-size masks, but for edge pixels.
    area = torch.nn.functional.interpolate(
        torch.from_numpy(result.masks).float()[:, None], (45, 80), mode="area"
    )[:, 0].numpy()
    clear = np.abs(area - 0.5) > 0.3
    np.testing.assert_array_equal(small[clear], area[clear] >= 0.5)
