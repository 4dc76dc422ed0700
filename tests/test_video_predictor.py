"""Offline video predictor: every official reference scenario, and the API's error handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import MICRO

from sam2_video.predictors.video import SAM2VideoPredictor, UnknownObjectError

SCENARIOS = {
    "scenario1_single_click": [""],
    "scenario2_click_box_mask": [""],
    "scenario3_two_cond_frames": [""],
    "scenario4_correction_after_tracking": ["p1_", "p2_"],
    "scenario5_forward_reverse": ["fw_", "rv_"],
}
# Reference tolerances (README section 4): bf16 memory rounding lets video logits drift a little.
VIDEO_LOGIT_ATOL = 2e-2
SCORE_ATOL = 1e-2
MAX_DIFFERING_BITS_PER_FRAME = 8


@pytest.fixture(scope="module")
def frames():
    return np.load(MICRO / "video_frames.npz")


def _bit_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(a ^ b, axis=-1).sum())


def _packed(masks: torch.Tensor) -> np.ndarray:
    return np.packbits(masks[:, 0].numpy() > 0, axis=-1)


def _run_call(pred, state, call, arrays):
    if call["method"] == "add_new_mask":
        return pred.add_new_mask(
            state, call["frame_idx"], call["obj_id"], arrays[f"call_{call['tag']}__in_mask"]
        )
    return pred.add_new_points_or_box(
        state,
        call["frame_idx"],
        call["obj_id"],
        points=call.get("points"),
        labels=call.get("labels"),
        box=call.get("box"),
        clear_old_points=call.get("clear_old_points", True),
    )


def _check_pass(pred, state, arrays, prefix, reverse):
    results = list(pred.propagate_in_video(state, reverse=reverse))
    assert [r[0] for r in results] == list(arrays[f"{prefix}frame_order"])
    expected = arrays[f"{prefix}video_res_mask_bits"]
    for i, (frame_idx, _, masks) in enumerate(results):
        differing = _bit_diff(_packed(masks), expected[i])
        assert differing <= MAX_DIFFERING_BITS_PER_FRAME, (
            f"{prefix}frame {frame_idx}: {differing} px"
        )
        key = f"{prefix}video_res_logits_frame{frame_idx:02d}"
        if key in arrays.files:
            np.testing.assert_allclose(masks[:, 0].numpy(), arrays[key], atol=VIDEO_LOGIT_ATOL)


def _check_state(state, arrays, prefix):
    """The stored per-frame state (low-res logits, pointers, scores, memory) matches."""
    for i, obj in enumerate(state.objects.values()):
        for t in range(state.num_frames):
            out = obj.conditioning.get(t) or obj.tracked.get(t)
            if out is None:
                continue
            np.testing.assert_allclose(
                out.low_res_logits[0].numpy(),
                arrays[f"{prefix}state_low_res_logits"][t, i],
                atol=VIDEO_LOGIT_ATOL,
                err_msg=f"obj {i} frame {t}",
            )
            np.testing.assert_allclose(
                out.obj_ptr.numpy(), arrays[f"{prefix}state_obj_ptr"][t, i], atol=SCORE_ATOL
            )
            np.testing.assert_allclose(
                float(out.object_score),
                arrays[f"{prefix}state_object_score_logits"][t, i],
                atol=SCORE_ATOL,
            )
            assert (t in obj.conditioning) == bool(arrays[f"{prefix}state_is_cond_frame"][t, i])
            ref_mem = torch.from_numpy(
                arrays[f"{prefix}state_maskmem_features_bf16_bits"][t, i].astype(np.int16)
            ).view(torch.bfloat16)
            np.testing.assert_allclose(
                out.maskmem.float().numpy(), ref_mem.float().numpy(), atol=0.05, rtol=0.02
            )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_reference_scenario(micro_model, frames, scenario):
    meta = json.loads((MICRO / f"video_{scenario}.json").read_text())
    arrays = np.load(MICRO / f"video_{scenario}.npz")
    pred = SAM2VideoPredictor(micro_model)
    # The reference frames were resized by PIL (bicubic); feed those exact pixels.
    state = pred.init_state(frames["frames_resized_uint8"], video_hw=tuple(meta["video_hw"]))
    prefixes = list(SCENARIOS[scenario])
    for call in meta["calls"]:
        if scenario.startswith("scenario4") and call["frame_idx"] == 8:
            _check_pass(pred, state, arrays, prefixes.pop(0), reverse=False)
            _check_state(state, arrays, "p1_")
        frame_idx, obj_ids, masks = _run_call(pred, state, call, arrays)
        assert frame_idx == call["returned_frame_idx"]
        assert obj_ids == call["returned_obj_ids"]
        ours = masks[obj_ids.index(call["obj_id"]), 0].numpy()
        np.testing.assert_allclose(
            ours, arrays[f"call_{call['tag']}__video_res_logits_obj"], atol=VIDEO_LOGIT_ATOL
        )
        assert (
            _bit_diff(_packed(masks), arrays[f"call_{call['tag']}__video_res_mask_bits_all"]) <= 4
        )
    for prefix in prefixes:
        _check_pass(pred, state, arrays, prefix, reverse=prefix == "rv_")
    state_prefix = "p2_" if scenario.startswith("scenario4") else ""
    _check_state(state, arrays, state_prefix)


def test_api_errors_leave_state_intact(micro_model, frames):
    pred = SAM2VideoPredictor(micro_model)
    state = pred.init_state(frames["frames_uint8"][:3])
    pred.add_new_points_or_box(state, 0, 1, points=[[100, 50]], labels=[1])
    bad_calls = [
        dict(points=[[100, 50]]),  # labels missing
        dict(points=[[100, 50]], labels=[1, 0]),
        dict(points=[[1000, 50]], labels=[1]),
        dict(points=np.zeros((0, 2)), labels=np.zeros(0)),
        dict(box=[50, 50, 10, 10]),
        dict(),
    ]
    for kwargs in bad_calls:
        with pytest.raises(ValueError):
            pred.add_new_points_or_box(state, 0, 2, **kwargs)
    with pytest.raises(ValueError):
        pred.add_new_points_or_box(state, 7, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(ValueError):
        pred.add_new_mask(state, 0, 1, np.zeros((4, 4, 4), bool))
    with pytest.raises(UnknownObjectError):
        pred.clear_all_prompts_in_frame(state, 0, 99)
    with pytest.raises(UnknownObjectError):
        pred.remove_object(state, 99, strict=True)
    assert state.obj_ids == [1]
    results = list(pred.propagate_in_video(state))
    assert [r[0] for r in results] == [0, 1, 2]
    assert all(r[2].shape == (1, 1, 180, 320) for r in results)


def test_remove_and_reset(micro_model, frames):
    pred = SAM2VideoPredictor(micro_model)
    state = pred.init_state(frames["frames_uint8"][:2])
    pred.add_new_points_or_box(state, 0, 1, points=[[100, 50]], labels=[1])
    pred.add_new_points_or_box(state, 0, 2, box=[10, 10, 80, 90])
    obj_ids, updated = pred.remove_object(state, 1)
    assert obj_ids == [2]
    assert [t for t, _ in updated] == [0] and updated[0][1].shape == (1, 1, 180, 320)
    pred.clear_all_prompts_in_frame(state, 0, 2)
    with pytest.raises(ValueError, match="no prompt"):
        list(pred.propagate_in_video(state))
    pred.reset_state(state)
    assert state.obj_ids == []
    with pytest.raises(ValueError, match="no object"):
        list(pred.propagate_in_video(state))


def test_init_state_from_mp4_and_folder(micro_model, tmp_path, frames):
    import av
    import cv2

    clip = frames["frames_uint8"][:3]
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for image in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(clip):
        cv2.imwrite(str(folder / f"{i}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    pred = SAM2VideoPredictor(micro_model)
    for source in (path, folder):
        state = pred.init_state(source)
        assert state.num_frames == 3 and state.video_hw == (180, 320)
    with pytest.raises(ValueError):
        pred.init_state(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError):
        pred.init_state(corrupt)
