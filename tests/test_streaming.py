"""Streaming session: equivalence with the offline predictor, batching, prompts mid-stream,
lost objects, and bad input that must leave a session intact."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from sam2_video.predictors.stream_types import masks_to_boxes
from sam2_video.predictors.streaming import (
    FrameSizeError,
    NoFrameError,
    SessionOptions,
    StreamingSession,
    TooManyObjectsError,
)
from sam2_video.predictors.video import SAM2VideoPredictor, UnknownObjectError

TESTS = Path(__file__).parent
MICRO = TESTS / "fixtures" / "reference" / "micro"
CLIP = TESTS / "data" / "bedroom.mp4"
CLIP_HW = (180, 320)

# Prompts of the reference scenario 2 (frame 0): a click, a box and a mask.
CLICK = np.array([[210.0, 100.0]]), np.array([1])
BOX = np.array([20.0, 60.0, 120.0, 170.0])
# Masks from two code paths that should agree may differ on a few pixels where a logit is ~0.
MAX_DIFFERENT_PIXELS = 20


@pytest.fixture(scope="module")
def video_frames() -> np.ndarray:
    """(24, 180, 320, 3) uint8 RGB bedroom frames of the reference data."""
    with np.load(MICRO / "video_frames.npz") as data:
        return data["frames_uint8"]


@pytest.fixture(scope="module")
def reference_mask() -> np.ndarray:
    """(180, 320) bool mask of object 3 in reference scenario 2."""
    with np.load(MICRO / "video_scenario2_click_box_mask.npz") as data:
        return data["call_f0_obj3_mask__in_mask"].astype(bool)


def decode_clip(num_frames: int) -> np.ndarray:
    """First frames of the real clip, decoded with PyAV and downscaled to 320 x 180."""
    frames = []
    with av.open(str(CLIP)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(rgb, CLIP_HW[::-1], interpolation=cv2.INTER_AREA))
            if len(frames) == num_frames:
                break
    return np.stack(frames)


@pytest.fixture(scope="module")
def clip_frames() -> np.ndarray:
    return decode_clip(26)


def prompt_three_objects(session: StreamingSession, reference_mask: np.ndarray, ids=(1, 2, 3)):
    """Scenario-2 prompts for the objects in `ids` on the session's current frame."""
    result = None
    if 1 in ids:
        result = session.add_points(1, *CLICK)
    if 2 in ids:
        result = session.add_box(2, BOX)
    if 3 in ids:
        result = session.add_mask(3, reference_mask)
    return result


def different_pixels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def state_snapshot(session: StreamingSession) -> dict:
    """What a failed call must not change."""
    return {
        "frame_idx": session.frame_idx,
        "frame_hw": session.frame_hw,
        "obj_ids": session.obj_ids,
        "memory": {
            obj_id: (
                sorted(obj.conditioning),
                sorted(obj.tracked),
                sorted(obj.pending),
                {t: (xy.clone(), lab.clone()) for t, (xy, lab) in obj.points.items()},
            )
            for obj_id, obj in session.objects.items()
        },
    }


def assert_same_snapshot(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k != "memory"} == {
        k: v for k, v in b.items() if k != "memory"
    }
    assert a["memory"].keys() == b["memory"].keys()
    for obj_id in a["memory"]:
        cond_a, tracked_a, pending_a, points_a = a["memory"][obj_id]
        cond_b, tracked_b, pending_b, points_b = b["memory"][obj_id]
        assert (cond_a, tracked_a, pending_a) == (cond_b, tracked_b, pending_b)
        assert points_a.keys() == points_b.keys()
        for t in points_a:
            assert all(torch.equal(x, y) for x, y in zip(points_a[t], points_b[t]))


# ---------------------------------------------------------------------------- equivalences
def test_streaming_matches_offline_predictor(micro_model, video_frames, reference_mask):
    predictor = SAM2VideoPredictor(micro_model)
    state = predictor.init_state(video_frames)
    predictor.add_new_points_or_box(state, 0, 1, points=CLICK[0], labels=CLICK[1])
    predictor.add_new_points_or_box(state, 0, 2, box=BOX)
    predictor.add_new_mask(state, 0, 3, reference_mask)
    offline = {
        frame_idx: (obj_ids, (logits[:, 0] > 0).cpu().numpy())
        for frame_idx, obj_ids, logits in predictor.propagate_in_video(state)
    }
    assert sorted(offline) == list(range(len(video_frames)))

    session = StreamingSession(micro_model, SessionOptions(fill_hole_area=0))
    session.add_frame(video_frames[0], pts=0)
    results = [prompt_three_objects(session, reference_mask)]
    results += [session.add_frame(frame, pts=t) for t, frame in enumerate(video_frames[1:], 1)]

    for t, result in enumerate(results):
        obj_ids, masks = offline[t]
        assert result.frame_idx == t and result.pts == t
        assert result.obj_ids == obj_ids == [1, 2, 3]
        assert result.masks.shape == (3, *video_frames.shape[1:3])
        for i in range(3):
            assert different_pixels(result.masks[i], masks[i]) <= MAX_DIFFERENT_PIXELS, (t, i)
    # Object 2's box prompt says "no object" on frame 0 (reference data); tracking finds it.
    assert results[0].object_scores[1] <= 0 and not results[0].masks[1].any()
    assert all(r.masks[i].any() for r in results[1:] for i in range(3))


def test_batched_objects_match_objects_tracked_alone(micro_model, video_frames, reference_mask):
    # Object 3 joins on frame 2, so the batch mixes memory banks of different lengths.
    frames = video_frames[:8]
    prompts = {
        1: (0, lambda s: s.add_points(1, *CLICK)),
        2: (0, lambda s: s.add_box(2, BOX)),
        3: (2, lambda s: s.add_mask(3, reference_mask)),
    }

    def run(obj_ids):
        session = StreamingSession(micro_model, SessionOptions())
        results = []
        for t, frame in enumerate(frames):
            result = session.add_frame(frame)
            for obj_id in obj_ids:
                if prompts[obj_id][0] == t:
                    result = prompts[obj_id][1](session)
            results.append(result)
        return results

    together = run([1, 2, 3])
    assert [len(r.obj_ids) for r in together] == [2, 2, 3, 3, 3, 3, 3, 3]
    for obj_id in (1, 2, 3):
        alone = run([obj_id])
        for t, (single, batched) in enumerate(zip(alone, together)):
            if prompts[obj_id][0] > t:
                continue
            i = batched.obj_ids.index(obj_id)
            assert single.obj_ids == [obj_id]
            assert different_pixels(single.masks[0], batched.masks[i]) <= MAX_DIFFERENT_PIXELS
            np.testing.assert_allclose(single.object_scores[0], batched.object_scores[i], atol=1e-3)


# ---------------------------------------------------------------------------- prompts mid-stream
def test_prompts_mid_stream_on_real_clip(micro_model, clip_frames):
    session = StreamingSession(micro_model, SessionOptions(return_logits=True))
    session.add_frame(clip_frames[0])
    first = session.add_points(None, *CLICK)
    assert first.obj_ids == [1] and first.masks[0, 100, 210]
    for t in range(1, 5):
        assert session.add_frame(clip_frames[t]).obj_ids == [1]

    # Frame 5: a new object, answered at once on the current frame.
    session.add_frame(clip_frames[5])
    x, y = 60, 120
    added = session.add_points(None, np.array([[x, y]]), np.array([1]))
    assert added.frame_idx == 5 and added.obj_ids == [1, 2]
    assert added.masks[1, y, x]
    assert 5 in session.objects[2].pending
    after = session.add_frame(clip_frames[6])
    assert after.obj_ids == [1, 2] and after.masks[1].any()
    assert list(session.objects[2].conditioning) == [5]

    # Frame 8: correct object 1 with a click where its tracked mask is mostly empty.
    session.add_frame(clip_frames[7])
    tracked = session.add_frame(clip_frames[8])
    x, y = 250, 40
    window = np.s_[y - 5 : y + 6, x - 5 : x + 6]
    assert tracked.masks[0][window].mean() < 0.5
    corrected = session.add_points(1, np.array([[x, y]]), np.array([1]))
    assert corrected.frame_idx == 8 and corrected.obj_ids == [1, 2]
    assert corrected.masks[0][y, x] and corrected.masks[0][window].mean() > 0.9
    np.testing.assert_array_equal(corrected.masks[1], tracked.masks[1])  # others untouched
    assert np.array_equal(corrected.masks[0], corrected.logits[0] > 0)

    # The correction persists as a conditioning frame, with the mask the user saw...
    session.add_frame(clip_frames[9])
    memory = session.objects[1]
    assert sorted(memory.conditioning) == [0, 8]
    answer = session.tracker.upsample([memory.conditioning[8]], CLIP_HW)[0] > 0
    assert np.array_equal(answer.numpy(), corrected.masks[0])
    # ...beyond the window where tracked frames are forgotten.
    for t in range(10, 26):
        session.add_frame(clip_frames[t])
    assert sorted(memory.conditioning) == [0, 8]
    assert 9 not in memory.tracked

    # Removing an object: gone from the current result and from later frames; ids not reused.
    session.remove_object(2)
    assert session.current_result().obj_ids == [1]
    assert session.add_frame(clip_frames[0]).obj_ids == [1]
    assert session.new_object_id() == 3

    # Reset: no objects, no frame; a frame of another size starts a new stream.
    session.reset()
    assert session.obj_ids == [] and session.frame_idx == -1 and session.frame_hw is None
    with pytest.raises(NoFrameError):
        session.add_points(None, *CLICK)
    smaller = cv2.resize(clip_frames[0], (160, 90), interpolation=cv2.INTER_AREA)
    restarted = session.add_frame(smaller)
    assert restarted.frame_idx == 0 and restarted.masks.shape == (0, 90, 160)
    assert session.add_points(None, np.array([[80.0, 45.0]]), np.array([1])).obj_ids == [4]


def test_correction_is_forgotten_when_not_conditioning(micro_model, clip_frames):
    session = StreamingSession(micro_model, SessionOptions(corrections_as_conditioning=False))
    session.add_frame(clip_frames[0])
    session.add_points(None, *CLICK)
    session.add_frame(clip_frames[1])
    session.add_points(1, np.array([[250.0, 40.0]]), np.array([1]))
    session.add_frame(clip_frames[2])
    memory = session.objects[1]
    assert list(memory.conditioning) == [0]
    assert memory.tracked[1].from_prompt  # the correction is a tracked frame's answer


# ---------------------------------------------------------------------------- bad input
def test_bad_input_leaves_the_session_intact(micro_model, clip_frames):
    def started(options: SessionOptions) -> StreamingSession:
        session = StreamingSession(micro_model, options)
        session.add_frame(clip_frames[0])
        session.add_points(None, *CLICK)
        session.add_box(None, BOX)
        session.add_frame(clip_frames[1])
        return session

    options = SessionOptions(max_objects=2)
    session, twin = started(options), started(options)
    before = state_snapshot(session)
    before_result = session.current_result()
    h, w = CLIP_HW
    bad_calls = [
        (UnknownObjectError, lambda: session.remove_object(99)),
        (ValueError, lambda: session.add_points(1, np.zeros((0, 2)), np.zeros(0))),
        (ValueError, lambda: session.add_points(1, np.array([[w + 10.0, 5.0]]), np.array([1]))),
        (ValueError, lambda: session.add_points(1, np.array([[5.0, -1.0]]), np.array([1]))),
        (
            ValueError,
            lambda: session.add_points(1, np.array([[5.0, 5.0], [6.0, 6.0]]), np.array([1])),
        ),
        (ValueError, lambda: session.add_points(1, np.array([[5.0, 5.0]]), np.array([7]))),
        (ValueError, lambda: session.add_points(1, np.array([[5.0, 5.0]]), None)),
        (ValueError, lambda: session.add_points(None, np.array([[np.nan, 5.0]]), np.array([1]))),
        (ValueError, lambda: session.add_box(1, np.array([50.0, 50.0, 10.0, 60.0]))),
        (ValueError, lambda: session.add_box(1, np.array([1.0, 2.0, 3.0]))),
        (ValueError, lambda: session.add_mask(1, np.zeros((h, w + 1), bool))),
        (FrameSizeError, lambda: session.add_frame(np.zeros((h + 2, w, 3), np.uint8))),
        (ValueError, lambda: session.add_frame(clip_frames[2].astype(np.float64))),
        (ValueError, lambda: session.add_frame(clip_frames[2][..., 0])),
        (ValueError, lambda: session.add_frame(np.zeros((h, w, 4), np.uint8))),
        (ValueError, lambda: session.add_frame(torch.zeros(h, w, 3, dtype=torch.int64))),
        (TooManyObjectsError, lambda: session.add_points(None, *CLICK)),
        (TooManyObjectsError, lambda: session.add_points(7, *CLICK)),
        (TooManyObjectsError, lambda: session.add_mask(None, np.ones((h, w), bool))),
    ]
    for error, call in bad_calls:
        with pytest.raises(error):
            call()
        assert_same_snapshot(state_snapshot(session), before)
    assert issubclass(UnknownObjectError, KeyError) and issubclass(FrameSizeError, ValueError)
    assert twin.new_object_id() == session.new_object_id() == 3  # refused prompts took no id

    current = session.current_result()
    assert current.obj_ids == before_result.obj_ids
    np.testing.assert_array_equal(current.masks, before_result.masks)
    # The session goes on exactly as one that never saw the bad calls.
    for frame in clip_frames[2:4]:
        mine, theirs = session.add_frame(frame), twin.add_frame(frame)
        assert mine.obj_ids == theirs.obj_ids == [1, 2]
        np.testing.assert_array_equal(mine.masks, theirs.masks)
        np.testing.assert_array_equal(mine.object_scores, theirs.object_scores)


def test_prompts_before_the_first_frame(micro_model):
    session = StreamingSession(micro_model)
    for call in (
        lambda: session.add_points(None, *CLICK),
        lambda: session.add_box(None, BOX),
        lambda: session.add_mask(None, np.ones(CLIP_HW, bool)),
        session.current_result,
        session.auto_seed,
    ):
        with pytest.raises(NoFrameError):
            call()
    assert session.obj_ids == [] and session.frame_idx == -1


# ---------------------------------------------------------------------------- lost objects
def make_absent(session: StreamingSession, obj_id: int, frames: set[int]) -> None:
    """Let the tracker report `obj_id` absent (as the model does: score < 0, no mask) on
    `frames`: the micro model's presence head says "present" on every real frame."""
    track_frames = session.tracker.track_frames

    def track_with_absence(features, groups, num_frames=None):
        outputs = track_frames(features, groups, num_frames)
        for group, group_outputs in zip(groups, outputs):
            for obj, out in zip(group.objects, group_outputs):
                if obj.obj_id == obj_id and group.frame_idx in frames:
                    out.object_score = torch.full_like(out.object_score, -3.0)
                    out.low_res_logits = torch.full_like(out.low_res_logits, -1024.0)
        return outputs

    session.tracker.track_frames = track_with_absence


@pytest.mark.parametrize("drop_lost", [False, True])
def test_lost_objects(micro_model, video_frames, drop_lost):
    session = StreamingSession(micro_model, SessionOptions(lost_after=3, drop_lost=drop_lost))
    session.add_frame(video_frames[0])
    session.add_points(None, *CLICK)
    session.add_box(None, BOX)
    # Object 2 is absent on frames 2-3, back on 4 (the count restarts), then gone from 6 on.
    absent = {2, 3, 6, 7, 8, 9, 10}
    make_absent(session, 2, absent)
    lost_on = {}
    for t in range(1, 11):
        result = session.add_frame(video_frames[t])
        if result.lost:
            lost_on[t] = result.lost
        if t < 8 or not drop_lost:
            assert result.obj_ids == [1, 2]
            assert result.masks[1].any() == (t not in absent)
        else:
            assert result.obj_ids == [1]
    assert lost_on == {8: [2]}  # reported once, on its third absent frame in a row
    assert session.obj_ids == ([1] if drop_lost else [1, 2])


def test_prompt_resets_the_absence_count_and_lost_after_none(micro_model, video_frames):
    session = StreamingSession(micro_model, SessionOptions(lost_after=2))
    session.add_frame(video_frames[0])
    session.add_points(None, *CLICK)
    make_absent(session, 1, set(range(1, 8)))
    assert session.add_frame(video_frames[1]).lost == []
    session.add_points(1, *CLICK)  # the user says it is there
    assert session.add_frame(video_frames[2]).lost == []
    assert session.add_frame(video_frames[3]).lost == [1]

    never = StreamingSession(micro_model, SessionOptions(lost_after=None, drop_lost=True))
    never.add_frame(video_frames[0])
    never.add_points(None, *CLICK)
    make_absent(never, 1, set(range(1, 8)))
    assert all(never.add_frame(f).lost == [] for f in video_frames[1:5])
    assert never.obj_ids == [1]


def test_masks_to_boxes_gives_inclusive_pixel_extents():
    rng = np.random.default_rng(0)
    masks = np.zeros((5, 30, 40), dtype=bool)
    masks[0, 3:9, 10:25] = True
    masks[1, 29, 0] = True  # one pixel in a corner
    masks[2] = rng.random((30, 40)) < 0.01  # scattered pixels
    masks[4] = True  # masks[3] stays empty
    expected = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        expected.append([xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0])
    boxes = masks_to_boxes(torch.from_numpy(masks))
    assert boxes.dtype == torch.float32
    np.testing.assert_array_equal(boxes.numpy(), np.float32(expected))
    assert masks_to_boxes(torch.zeros(0, 30, 40, dtype=torch.bool)).shape == (0, 4)
