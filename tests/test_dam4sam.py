"""DAM4SAM memory against the official tracker (tests/fixtures/dam4sam, see generate.py there).

The clip has one target disc and two look-alike discs; the official tracker promotes frames
2, 8, ..., 38 to its distractor-resolving memory. We check per frame the low-res logits (video
tolerance of the reference README), the promoted frames exactly, the attended memory frames and
object pointers exactly (frames, temporal slots, offsets and normalisers, in the network's
order), and the re-encoded memory of every DRM frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_video.predictors.stream_types import SessionOptions
from sam2_video.predictors.streaming import StreamingSession
from sam2_video.tracking.dam4sam import (
    Dam4SamMemory,
    box_iou_one_short,
    new_object_memory,
    reveals_distractor,
)
from sam2_video.tracking.memory_bank import ObjectMemory, RetentionPolicy
from sam2_video.tracking.prompts import prepare_mask_prompt
from sam2_video.tracking.tracker import FrameTracker, TrackerOptions
from sam2_video.utils.transforms import preprocess

DAM = Path(__file__).parent / "fixtures" / "dam4sam"
LOGITS_ATOL = 2e-2  # video logits (tests/fixtures/reference/README.md, section 4)
LIVE = RetentionPolicy(max_conditioning_frames=4, max_frame_distance=15)
OFFLINE = RetentionPolicy()


@pytest.fixture(scope="module")
def reference():
    clip = np.load(DAM / "clip.npz")
    return clip, np.load(DAM / "reference.npz"), json.loads((DAM / "reference.json").read_text())


def _dam_tracker(model) -> FrameTracker:
    # The official fork fills no holes and picks the best of 3 masks for up to 3 points.
    return FrameTracker(model, TrackerOptions(fill_hole_area=0, multimask_max_points=3))


def _run(model, reference, policy, objects_per_row=1):
    """Track the clip with `objects_per_row` copies of the target; returns per-copy logs."""
    clip, ref, meta = reference
    inputs = torch.from_numpy(ref["model_inputs"])
    tracker = _dam_tracker(model)
    hw = tuple(meta["frame_hw"])
    objects = [Dam4SamMemory(i + 1, frame_hw=hw) for i in range(objects_per_row)]
    features = model.forward_image(inputs[0:1])
    for obj in objects:
        model_mask = prepare_mask_prompt(
            torch.from_numpy(clip["first_mask"]), model.image_size, tracker.device
        )
        output, _ = tracker.prompt_mask(features, obj, 0, model_mask)
        tracker.encode_prompted(features, [output])
        obj.conditioning[0] = output
        obj.frames_tracked[0] = False
    logs = [{"logits": [], "spatial": {}, "pointers": {}} for _ in objects]
    max_ptrs = model.config.max_obj_ptrs_in_encoder
    for t in range(1, inputs.shape[0]):
        for obj, log in zip(objects, logs):
            selection = obj.select(t, False, model.num_maskmem, max_ptrs, None)
            log["spatial"][t] = [[_frame_of(obj, out), slot] for slot, out in selection.spatial]
            log["pointers"][t] = [
                [_frame_of(obj, out), offset, selection.pointer_span - 1]
                for offset, out in selection.pointers
            ]
        features = model.forward_image(inputs[t : t + 1])
        outputs = tracker.track(features, objects, t, False, None)
        for obj, out, log in zip(objects, outputs, logs):
            log["logits"].append(out.low_res_logits[0].numpy())
            obj.tracked[t] = out
            obj.frames_tracked[t] = False
            obj.retain(t, policy, model.num_maskmem)
    return objects, logs


def _frame_of(obj: Dam4SamMemory, out) -> int:
    for store in (obj.conditioning, obj.promoted, obj.tracked):
        for t, candidate in store.items():
            if candidate is out:
                return t
    raise AssertionError("selected output is not stored")


@pytest.fixture(scope="module")
def offline_run(micro_model, reference):
    torch.set_num_threads(2)
    with torch.inference_mode():
        return _run(micro_model, reference, OFFLINE)


def test_preprocessing_matches_official_inputs(micro_model, reference):
    clip, ref, _ = reference
    frames = torch.from_numpy(clip["frames_uint8"][:3]).permute(0, 3, 1, 2).float() / 255.0
    ours = torch.cat([preprocess(f, micro_model.image_size, "cpu") for f in frames])
    torch.testing.assert_close(ours, torch.from_numpy(ref["model_inputs"][:3]), atol=1e-5, rtol=0)


def test_low_res_logits_match_official(offline_run, reference):
    _, ref, _ = reference
    _, logs = offline_run
    ours = np.stack(logs[0]["logits"])
    theirs = ref["low_res_logits"][1:]
    np.testing.assert_allclose(ours, theirs, atol=LOGITS_ATOL, rtol=0)


def test_promotions_match_official(offline_run, reference):
    _, _, meta = reference
    objects, _ = offline_run
    assert sorted(objects[0].promoted) == meta["promotions"]
    assert objects[0].promotion_count == len(meta["promotions"]) == 7


def test_attended_memory_matches_official(offline_run, reference):
    _, _, meta = reference
    _, logs = offline_run
    spatial = {int(t): [[f, slot] for f, _, slot in v] for t, v in meta["spatial"].items()}
    pointers = {int(t): v for t, v in meta["pointers"].items()}
    assert logs[0]["spatial"] == spatial
    assert logs[0]["pointers"] == pointers


def test_drm_memory_reencoded_from_binarised_mask(offline_run, reference):
    _, ref, _ = reference
    objects, _ = offline_run
    obj = objects[0]
    drm = obj.drm()
    assert sorted(drm) == ref["drm_frames"].tolist()
    theirs = torch.from_numpy(ref["drm_maskmem_bf16_bits"].view(np.int16)).view(torch.bfloat16)
    ours = torch.stack([drm[t].maskmem for t in sorted(drm)])
    # bf16 storage: a last-bit difference is 1/128 relative; values are O(1).
    torch.testing.assert_close(ours.float(), theirs.float(), atol=5e-2, rtol=1e-2)


def test_batched_objects_with_bounded_memory_equal_one_alone(micro_model, reference, offline_run):
    """Three copies of the target in one batch, under the live retention (pointer window,
    reachable RAM frames, 4 promotions): each copy matches the single offline object exactly
    (same promotions and attended frames, logits to 1e-4) while its storage stays bounded."""
    with torch.inference_mode():
        objects, logs = _run(micro_model, reference, LIVE, objects_per_row=3)
    offline_objects, alone = offline_run
    for obj, log in zip(objects, logs):
        assert obj.promotion_count == offline_objects[0].promotion_count == 7
        assert sorted(obj.promoted) == sorted(offline_objects[0].promoted)[-4:]
        assert log["spatial"] == alone[0]["spatial"]
        assert log["pointers"] == alone[0]["pointers"]
        np.testing.assert_allclose(
            np.stack(log["logits"]), np.stack(alone[0]["logits"]), atol=1e-4, rtol=0
        )
        assert len(obj.tracked) <= 16 + 7
        assert len([t for t, out in obj.tracked.items() if out.maskmem is not None]) <= 8


def test_box_iou_one_short_matches_the_official_arithmetic():
    # Boxes cover left..right-1 x top..bottom-1 (one pixel short of the mask).
    assert box_iou_one_short((3, 2, 6, 4), (3, 2, 8, 4)) == pytest.approx(6 / 10)
    assert box_iou_one_short((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    # A one-pixel-wide union counts as identical boxes.
    assert box_iou_one_short((5, 0, 5, 9), (5, 0, 6, 9)) == 1.0
    # A one-pixel-wide mask has an empty box: no overlap with a real one.
    assert box_iou_one_short((5, 0, 5, 9), (0, 0, 9, 9)) == 0.0


def test_reveals_distractor_keeps_the_largest_part_only():
    chosen = np.zeros((40, 60), bool)
    chosen[10:20, 10:20] = True
    near = chosen.copy()
    near[10:20, 20:22] = True  # a thin extension: the box barely grows
    far = chosen.copy()
    far[10:20, 40:50] = True  # a look-alike further right
    assert not reveals_distractor(chosen, [near], 0.7)
    assert reveals_distractor(chosen, [near, far], 0.7)
    speck = chosen.copy()
    speck[0, 59] = True  # a one-pixel part loses to the larger extension
    speck[10:20, 20:22] = True
    assert not reveals_distractor(chosen, [speck], 0.7)


def test_memory_kinds():
    assert type(new_object_memory(1, "sam2", (10, 10))) is ObjectMemory
    dam = new_object_memory(1, "dam4sam", (10, 10))
    assert isinstance(dam, Dam4SamMemory) and dam.memory_kind == "dam4sam"
    with pytest.raises(ValueError, match="unknown memory"):
        new_object_memory(1, "xmem", (10, 10))
    with pytest.raises(ValueError, match="forward only"):
        dam.select(3, True, 7, 16, None)


def test_streaming_session_matches_official(micro_model, reference):
    """The real path: a `StreamingSession(memory="dam4sam")` fed the clip's frames (as float in
    [0, 1]: the official tracker resizes float frames) reports the official promotions on the
    right frames, with the official low-res logits."""
    clip, ref, meta = reference
    session = StreamingSession(micro_model, SessionOptions(memory="dam4sam", lost_after=None))
    frames = torch.from_numpy(clip["frames_uint8"]).float() / 255.0
    session.add_frame(frames[0])
    session.add_mask(1, clip["first_mask"])
    promoted, logits = [], []
    for t in range(1, frames.shape[0]):
        result = session.add_frame(frames[t])
        logits.append(result.low_res_logits[0])
        if result.promoted:
            assert result.promoted == [1]
            promoted.append(result.frame_idx)
    assert promoted == meta["promotions"]
    np.testing.assert_allclose(
        np.stack(logits), ref["low_res_logits"][1:], atol=LOGITS_ATOL, rtol=0
    )
    obj = session.objects[1]
    assert obj.memory_kind == "dam4sam" and obj.promotion_count == 7
    assert len(obj.promoted) == 4 and len(obj.tracked) <= 16 + 7


def test_session_memory_option_is_checked(micro_model):
    with pytest.raises(ValueError, match="unknown memory"):
        SessionOptions(memory="xmem")
    session = StreamingSession(micro_model, SessionOptions(memory="dam4sam"))
    assert session.tracker.options.fill_hole_area == 0
    assert session.tracker.options.multimask_max_points == 3


def test_track_plan_takes_the_memory_option():
    from streamer.batch.track import TrackOptionError, plan_track

    assert plan_track(has_prompts=True, memory="dam4sam").memory == "dam4sam"
    assert plan_track(has_prompts=True).memory == "sam2"
    with pytest.raises(TrackOptionError, match="unknown memory"):
        plan_track(has_prompts=True, memory="xmem")


@pytest.mark.parametrize("hw", [(180, 320), (720, 1280), (255, 257), (100, 50)])
def test_video_areas_equal_a_full_resize(hw):
    """The promotion rule's areas, computed on the columns that can hold the mask only, equal
    counting the full-frame upsampling (the official way) exactly."""
    from sam2_video.modeling.resize import resize_bilinear
    from sam2_video.tracking.dam4sam import _video_areas

    g = torch.Generator().manual_seed(hw[0])
    logits = torch.randn(6, 1, 64, 64, generator=g) * 5 - 3
    logits[1] = -1024.0  # absent object
    logits[2, :, 10:20, 30:40] += 20.0
    expected = (resize_bilinear(logits, hw) > 0).flatten(1).sum(1).tolist()
    assert _video_areas(logits, [hw] * 6) == expected


@pytest.mark.timeout(900)
def test_dam4sam_memory_is_flat_over_a_long_stream(micro_model, reference):
    """120 frames of the look-alike clip (played forth and back) with two dam4sam objects:
    promotions go on past the 4 kept ones, yet what each object holds stays within the
    retention bounds (pointer window + the RAM frames the rule can still reach + 4 promotions
    + 4 prompts + 300 areas) on every frame, whatever the stream's length."""
    clip, _, _ = reference
    frames = clip["frames_uint8"]
    loop = np.concatenate([frames, frames[::-1]])
    session = StreamingSession(micro_model, SessionOptions(memory="dam4sam", lost_after=None))
    session.add_frame(loop[0])
    session.add_mask(1, clip["first_mask"])
    session.add_points(None, np.array([[150.0, 50.0]]), np.array([1]))
    stored = []
    for t in range(1, 121):
        session.add_frame(loop[t % len(loop)])
        for obj in session.objects.values():
            assert len(obj.promoted) <= 4 and len(obj.conditioning) <= 4
            assert len(obj.tracked) <= 16 + 7 and len(obj.areas) <= 300
            assert sum(out.maskmem is not None for out in obj.tracked.values()) <= 8
        stored.append(sum(len(o.tracked) + len(o.promoted) for o in session.objects.values()))
    assert all(obj.promotion_count > 4 for obj in session.objects.values())
    assert max(stored) <= 2 * (16 + 7 + 4)
