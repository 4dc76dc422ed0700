"""CUDA's device rules on the CPU: every public path under `DeviceSanitizer`
(tests/device_sanitizer.py), the sanitizer's own rules, and host reads per tracked frame.

A path passes when no op mixes host and device tensors (what a GPU would refuse with "Expected
all tensors to be on the same device") and no device tensor goes to numpy without `.cpu()`.
"""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from device_sanitizer import FAKE_DEVICE, DeviceMixError, DeviceSanitizer
from torch import nn

from sam2_video.build import build_sam2
from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from sam2_video.predictors.auto_seed import AutoSeedOptions
from sam2_video.predictors.image import SAM2ImagePredictor
from sam2_video.predictors.multi_stream import track_streams
from sam2_video.predictors.streaming import SessionOptions, StreamingSession
from sam2_video.predictors.video import SAM2VideoPredictor

MICRO = Path(__file__).parent / "fixtures" / "reference" / "micro"
CLICK = np.array([[210.0, 100.0]]), np.array([1])
BOX = np.array([20.0, 60.0, 120.0, 170.0])
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def model():
    """A model of its own: no tensor cached by other tests' runs outside the sanitizer."""
    # fp32: on the fake CUDA device, auto would ask for CUDA autocast (off without a GPU).
    return build_sam2(
        "sam2.1_micro", checkpoint=MICRO / "sam2.1_micro.pt", device="cpu", precision="fp32"
    )


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """(24, 180, 320, 3) uint8 RGB frames of the reference clip."""
    with np.load(MICRO / "video_frames.npz") as data:
        return data["frames_uint8"]


@pytest.fixture(scope="module")
def ref_mask() -> np.ndarray:
    with np.load(MICRO / "video_scenario2_click_box_mask.npz") as data:
        return data["call_f0_obj3_mask__in_mask"].astype(bool)


def sanitized(model: nn.Module) -> DeviceSanitizer:
    """A sanitizer that records every violation of a path (asserted with `assert_clean`)."""
    san = DeviceSanitizer(raise_on_violation=False)
    san.adopt(model)
    return san


def assert_clean(san: DeviceSanitizer) -> None:
    san.check()


# --- the sanitizer's own rules -----------------------------------------------------------------


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, points: torch.Tensor, *, move: bool) -> torch.Tensor:
        if move:
            points = points.to(self.weight.device)
        return points * self.weight


def test_a_forgotten_to_device_fails_and_the_fix_passes():
    module = _Scale()
    host = torch.arange(3.0)
    with DeviceSanitizer() as san:
        san.adopt(module)
        assert module.weight.device == FAKE_DEVICE and host.device.type == "cpu"
        with pytest.raises(DeviceMixError, match="mixed with host"):
            module(host, move=False)
        out = module(host, move=True)
        assert san.on_device(out) and out.device == FAKE_DEVICE
    assert out.device.type == "cpu"  # the data never left the CPU
    assert len(san.violations) == 1


def test_rules_scalars_indexing_numpy_and_host_reads():
    weight = torch.ones(4, 2)
    with DeviceSanitizer(raise_on_violation=False) as san:
        san.adopt([weight])
        # Allowed: 0-dim host tensors, host index tensors, uploads.
        _ = weight * torch.tensor(2.0)
        _ = weight[torch.tensor([0, 2])]
        weight[torch.tensor([1])] = torch.tensor(3.0)
        assert torch.device(weight.device) == FAKE_DEVICE
        created = torch.zeros(2, device=weight.device)
        moved = torch.from_numpy(np.ones(2, np.float32)).to(weight.device)
        assert san.on_device(created) and san.on_device(moved) and san.on_device(weight.sum())
        assert not san.violations
        # Refused by a GPU.
        _ = torch.where(weight > 0, weight, torch.zeros(4, 2))
        _ = weight.numpy()
        weight[torch.tensor([0, 1])] = torch.ones(2, 2)
        _ = torch.stack([weight[0, 0], torch.tensor(1.0)])  # no CPU scalars in stack / cat
        assert [v.op for v in san.violations] == [
            "_VariableFunctionsClass.where",
            "TensorBase.numpy",
            "TensorBase.__setitem__",
            "_VariableFunctionsClass.stack",
        ]
        # Counted host reads.
        float(weight[0, 0])
        weight.sum().item()
        bool(weight.any())
        weight.tolist()
        host = weight.cpu()
        assert not san.on_device(host)
        _ = host.numpy()  # fine once on the host
        _ = weight[weight > 1]  # a device mask sizes its output on the host
    assert dict(san.host_reads) == {
        "float": 1,
        "item": 1,
        "bool": 1,
        "tolist": 1,
        "cpu": 1,
        "bool_mask_index": 1,
    }


def test_a_frame_left_on_the_host_fails_the_image_predictor(model, frames, monkeypatch):
    """The defect class on real code: one `.to(device)` removed (the frame stays on the host)."""
    import sam2_video.predictors.image as image_module

    preprocess = image_module.preprocess
    monkeypatch.setattr(
        image_module, "preprocess", lambda image, size, device: preprocess(image, size, "cpu")
    )
    with DeviceSanitizer() as san:
        san.adopt(model)
        with pytest.raises(DeviceMixError, match="mixed with host"):
            SAM2ImagePredictor(model).set_image(frames[0])


# --- every public path ---------------------------------------------------------------------


def test_image_predictor_points_box_mask_multimask(model, frames):
    predictor = SAM2ImagePredictor(model)
    with sanitized(model) as san:
        predictor.set_image(frames[0])
        predictor.predict(*CLICK, multimask_output=True)
        predictor.predict(box=BOX, multimask_output=False)
        _, _, low_res = predictor.predict(*CLICK, box=BOX, multimask_output=False)
        predictor.predict(*CLICK, mask_input=low_res, multimask_output=False)
    assert_clean(san)


def test_automatic_mask_generator(model, frames):
    generator = SAM2AutomaticMaskGenerator(
        model, points_per_side=4, points_per_batch=8, crop_n_layers=1, min_mask_region_area=20
    )
    with sanitized(model) as san:
        generator.generate(frames[0])
    assert_clean(san)


def test_streaming_session_every_prompt(model, frames, ref_mask):
    seed = AutoSeedOptions(points_per_side=4, max_objects=4)
    session = StreamingSession(model, SessionOptions(max_objects=8, auto_seed=seed))
    with sanitized(model) as san:
        session.add_frame(frames[0])
        session.add_points(1, *CLICK)
        session.add_points(1, np.array([[215.0, 105.0]]), np.array([0]), clear_old_points=False)
        session.add_box(2, BOX)
        session.add_mask(3, ref_mask)
        session.add_frame(frames[1])
        session.add_frame(frames[2])
        session.add_points(None, np.array([[60.0, 100.0]]), np.array([1]))
        session.remove_object(2)
        session.add_frame(frames[3])
        session.auto_seed()
        session.add_frame(frames[4])
        session.reset()
        session.add_frame(frames[5])
        session.add_box(None, BOX)
        session.add_frame(frames[6])
    assert_clean(san)


def test_offline_video_predictor(model, frames, ref_mask):
    predictor = SAM2VideoPredictor(model)
    state = predictor.init_state(frames[:6])
    with sanitized(model) as san:
        predictor.add_new_points_or_box(
            state, frame_idx=0, obj_id=1, points=CLICK[0], labels=CLICK[1]
        )
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=2, box=BOX)
        predictor.add_new_mask(state, frame_idx=2, obj_id=3, mask=ref_mask)
        for _ in predictor.propagate_in_video(state):
            pass
        predictor.add_new_points_or_box(
            state, frame_idx=3, obj_id=1, points=BOX[None, :2], labels=[1]
        )
        predictor.remove_object(state, 2)
        predictor.clear_all_prompts_in_frame(state, 3, 1)
        for _ in predictor.propagate_in_video(state, reverse=True, start_frame_idx=5):
            pass
    assert_clean(san)


def test_multi_stream_batched_step(model, frames):
    sessions = [StreamingSession(model, SessionOptions(max_objects=4)) for _ in range(3)]
    with sanitized(model) as san:
        track_streams(sessions, [frames[0], frames[0][:, ::-1].copy(), frames[1]])
        sessions[0].add_points(None, *CLICK)
        sessions[1].add_box(None, BOX)
        sessions[1].add_points(None, np.array([[60.0, 100.0]]), np.array([1]))
        for t in range(1, 4):
            track_streams(sessions, [frames[t], frames[t][:, ::-1].copy(), frames[t + 1]])
    assert_clean(san)


def test_scheduler_with_prompts(model, monkeypatch):
    """A real scheduler thread serving a push session: frames, clicks, a box, auto-seed."""
    from streamer.protocol import AddBox, AddPoints, AutoSeed, RemoveObject
    from streamer.sessions import SessionCreate, SessionManager
    from streamer.sessions.devices import DeviceSpec
    from streamer.sessions.scheduler import DeviceScheduler
    from streamer.settings import Settings

    san = sanitized(model)
    step = DeviceScheduler.step

    def sanitized_step(self: DeviceScheduler) -> bool:
        with san:  # torch function modes are per thread: enter it on the scheduler's
            return step(self)

    monkeypatch.setattr(DeviceScheduler, "step", sanitized_step)
    settings = Settings(auto_seed_points_per_side=4, max_objects_per_session=4)
    manager = SessionManager(models={DeviceSpec("cpu:0", "cpu"): model}, settings=settings)
    manager.start()
    threads = torch.get_num_threads()
    try:
        session = manager.create(SessionCreate(source="webrtc"))
        image = np.full((120, 160, 3), 40, np.uint8)
        image[30:90, 40:120] = 220
        frame_seen = threading.Event()
        session.add_result_listener(lambda frame, result: frame_seen.set())
        session.push_source.push(image, pts=0)
        assert frame_seen.wait(TIMEOUT)
        replies = [
            session.submit(AddPoints(type="add_points", id="p", points=[(80, 60)], labels=[1])),
            session.submit(AddBox(type="add_box", id="b", box=(40, 30, 120, 90))),
            session.submit(AutoSeed(type="auto_seed", id="s")),
        ]
        concurrent.futures.wait(replies, TIMEOUT)
        frame_seen.clear()
        session.push_source.push(image, pts=3000)
        assert frame_seen.wait(TIMEOUT)
        removed = session.submit(RemoveObject(type="remove_object", id="r", obj_id=1))
        concurrent.futures.wait([removed], TIMEOUT)
        answers = [f.result(0) for f in [*replies, removed]]
    finally:
        manager.shutdown(timeout=TIMEOUT)
        torch.set_num_threads(threads)
    assert_clean(san)
    assert [a.type for a in answers] == ["ack"] * 4, answers


# --- host reads per tracked frame ------------------------------------------------------------


def _reads_per_tracked_frame(model, frames, objects: int) -> dict[str, int]:
    session = StreamingSession(model, SessionOptions(max_objects=8))
    with sanitized(model) as san:
        session.add_frame(frames[0])
        for k in range(objects):
            session.add_points(None, np.array([[20.0 + 35 * k, 40.0 + 15 * k]]), np.array([1]))
        session.add_frame(frames[1])
        san.reset_counts()
        session.add_frame(frames[2])
    return dict(san.host_reads)


def test_host_reads_per_tracked_frame_do_not_grow_with_objects(model, frames):
    one = _reads_per_tracked_frame(model, frames, 1)
    eight = _reads_per_tracked_frame(model, frames, 8)
    assert sum(one.values()) == sum(eight.values()), (one, eight)
