"""Objects are tracked as one batch: one forward per component per frame, same masks as alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_video import SessionOptions, StreamingSession
from sam2_video.modeling.sam2 import ImageFeatures
from sam2_video.tracking.memory_bank import ObjectMemory
from sam2_video.tracking.prompts import prepare_mask_prompt
from sam2_video.tracking.tracker import FrameTracker, StaticShapes, TrackerOptions
from sam2_video.utils.transforms import preprocess, to_chw_float

H, W = 96, 128
GRID = 4  # objects sit on a GRID x GRID lattice of coloured boxes
BOX = 16


def _box(k: int, t: int) -> tuple[int, int]:
    """Top-left corner (y, x) of object k on frame t (it drifts right by a pixel a frame)."""
    return 6 + (k // GRID) * 22, 4 + (k % GRID) * 30 + t


def _frame(t: int) -> np.ndarray:
    img = np.full((H, W, 3), 40, np.uint8)
    for k in range(GRID * GRID):
        y, x = _box(k, t)
        img[y : y + BOX, x : x + BOX] = (30 + 14 * k, 230 - 12 * k, 90 + 9 * (k % 5) * 4)
    return img


def _mask(k: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    y, x = _box(k, 0)
    mask[y : y + BOX, x : x + BOX] = True
    return mask


def _session(model, num_objects: int, **options) -> StreamingSession:
    session = StreamingSession(model, SessionOptions(**options))
    session.add_frame(_frame(0))
    for k in range(num_objects):
        session.add_mask(None, _mask(k))
    return session


class _CallCounter:
    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self.counts = dict.fromkeys(modules, 0)
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, args, output) -> None:
            self.counts[name] += 1

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def test_one_forward_per_component_per_frame(micro_model):
    num_objects = 6
    session = _session(micro_model, num_objects)
    session.add_frame(_frame(1))  # also encodes the prompts' memory (its own batched forward)
    counter = _CallCounter(
        {
            "image_encoder": micro_model.image_encoder,
            "memory_attention": micro_model.memory_attention,
            "sam_prompt_encoder": micro_model.sam_prompt_encoder,
            "sam_mask_decoder": micro_model.sam_mask_decoder,
            "memory_encoder": micro_model.memory_encoder,
        }
    )
    try:
        for t in (2, 3):
            result = session.add_frame(_frame(t))
            assert result.masks.shape == (num_objects, H, W)
    finally:
        counter.remove()
    assert counter.counts == dict.fromkeys(counter.counts, 2)  # 2 frames, once each per frame


def _features(model, t: int) -> ImageFeatures:
    chw = to_chw_float(_frame(t), model.device)
    return model.forward_image(preprocess(chw, model.image_size, chw.device))


def _track(
    tracker: FrameTracker, features: list[ImageFeatures], masks: list[np.ndarray]
) -> list[torch.Tensor]:
    """Prompt objects with masks on frame 0, track them on the other frames.

    Returns the low-res logits (N, 1, S/4, S/4) of every frame after the first.
    """
    objects = [ObjectMemory(k) for k in range(len(masks))]
    prompted = []
    for obj, mask in zip(objects, masks):
        model_mask = prepare_mask_prompt(torch.from_numpy(mask), tracker.image_size, tracker.device)
        output, _ = tracker.prompt_mask(features[0], obj, 0, model_mask)
        prompted.append(output)
    tracker.encode_prompted(features[0], prompted)
    for obj, output in zip(objects, prompted):
        obj.conditioning[0] = output
        obj.frames_tracked[0] = False
    logits = []
    for t in range(1, len(features)):
        outputs = tracker.track(features[t], objects, t, False, None)
        for obj, output in zip(objects, outputs):
            obj.tracked[t] = output
            obj.frames_tracked[t] = False
        logits.append(torch.stack([out.low_res_logits for out in outputs]))
    return logits


@torch.inference_mode()
def test_sixteen_objects_together_equal_each_alone(micro_model):
    tracker = FrameTracker(micro_model, TrackerOptions(fill_hole_area=8))
    features = [_features(micro_model, t) for t in range(3)]
    masks = [_mask(k) for k in range(16)]
    together = _track(tracker, features, masks)
    alone = [_track(tracker, features, [mask]) for mask in masks]
    for t, batched in enumerate(together):
        single = torch.cat([logits[t] for logits in alone])  # (16, 1, S/4, S/4)
        assert torch.equal(batched > 0, single > 0), f"frame {t + 1}: masks differ"
        # Not bitwise: kernels block differently per batch size, and a last-bit change can flip
        # the bfloat16 rounding of a stored memory, which the next frame sees (~1e-3).
        torch.testing.assert_close(batched, single, atol=1e-2, rtol=0)
    assert any(bool((logits > 0).any()) for logits in together)  # not trivially empty


@torch.inference_mode()
def test_static_shapes_do_not_change_results(micro_model):
    """A bank padded to full size and 5 objects padded to a batch of 8: same step results."""
    session = _session(micro_model, 5, max_conditioning_frames=2)
    for t in (1, 2, 3):
        if t == 2:  # a correction gives object 2 a second conditioning frame
            session.add_points(2, np.array([[40.0, 14.0]]), np.array([1]))
        session.add_frame(_frame(t))
    objects = list(session.objects.values())
    features = _features(micro_model, 4)
    options = TrackerOptions(fill_hole_area=8)
    plain = FrameTracker(micro_model, options)
    static = FrameTracker(micro_model, options, static_shapes=StaticShapes(2))
    # Same memories, same frame: one tracking step, and a click on a tracked frame (batch 1).
    for a, b in zip(
        plain.track(features, objects, 4, False, None),
        static.track(features, objects, 4, False, None),
    ):
        torch.testing.assert_close(a.low_res_logits, b.low_res_logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.obj_ptr, b.obj_ptr, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.object_score, b.object_score, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.maskmem.float(), b.maskmem.float(), atol=1e-2, rtol=1e-2)
    coords, labels = torch.tensor([[[60.0, 30.0]]]), torch.tensor([[1]], dtype=torch.int32)
    a, _ = plain.prompt_points(features, objects[0], 3, coords, labels, None)
    b, _ = static.prompt_points(features, objects[0], 3, coords, labels, None)
    torch.testing.assert_close(a.low_res_logits, b.low_res_logits, atol=1e-4, rtol=0)


def test_session_option_static_shapes(micro_model):
    session = StreamingSession(
        micro_model, SessionOptions(static_shapes=True, max_conditioning_frames=3)
    )
    assert session.tracker.static_shapes == StaticShapes(max_conditioning_frames=3)
    assert StreamingSession(micro_model).tracker.static_shapes is None


def test_static_shapes_buckets():
    shapes = StaticShapes(max_conditioning_frames=4)
    # Above the largest bucket, batches pad to its multiples (65 rows run as 128).
    assert [shapes.bucket(n) for n in (1, 2, 3, 5, 16, 17, 64, 65)] == [1, 2, 4, 8, 16, 32, 64, 128]
    with pytest.raises(ValueError):
        StaticShapes(max_conditioning_frames=0)
    with pytest.raises(ValueError):
        StaticShapes(batch_buckets=(4, 2))
