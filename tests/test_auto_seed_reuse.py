"""Auto-seeding reuses the current frame's encoder features instead of embedding it again."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sam2_video import SessionOptions, StreamingSession
from sam2_video.predictors.auto_seed import AutoSeeder, AutoSeedOptions
from sam2_video.utils.transforms import frame_to_chw, preprocess_frame

CLIP = Path(__file__).parent / "data" / "bedroom.mp4"
# Settings that give several masks per frame with the random-weight micro model.
SEED = AutoSeedOptions(
    points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.8, box_nms_thresh=1.0
)


@pytest.fixture(scope="module")
def first_frame() -> np.ndarray:
    """Frame 0 of the real clip at its native 960 x 540."""
    with av.open(str(CLIP)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _count_encoder_calls(
    model: torch.nn.Module,
) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    return calls, model.image_encoder.register_forward_hook(hook)


def test_seeding_frame_runs_the_encoder_once_and_gives_the_same_seeds(micro_model, first_frame):
    """Seeding on a streamed frame costs no second encoder pass, and the seeds are those the
    generator finds when it embeds the frame's model input itself (as it did before).

    (The session resizes uint8 frames as uint8 while `SAM2ImagePredictor.set_image` resizes
    in float, as the official predictor; that, not the reuse, moves a few mask pixels when
    comparing with a generator given the raw frame.)
    """
    seeder = AutoSeeder(micro_model, SEED)
    calls, handle = _count_encoder_calls(micro_model)
    try:
        model_input = preprocess_frame(frame_to_chw(first_frame), micro_model.image_size, "cpu")
        features = micro_model.forward_image(model_input)
        calls[0] = 0
        reused = seeder.propose(first_frame, features=features)
        assert calls[0] == 0  # propose did not embed the frame again
        own = _propose_embedding_model_input(micro_model, first_frame, model_input)
        assert calls[0] == 1

        session = StreamingSession(micro_model, SessionOptions(auto_seed=SEED, max_objects=32))
        calls[0] = 0
        result = session.add_frame(first_frame)
        assert calls[0] == 1  # tracking and seeding share one encoder pass
    finally:
        handle.remove()

    assert len(reused) >= 2
    assert len(reused) == len(own)
    for a, b in zip(reused, own):
        np.testing.assert_array_equal(a.mask, b.mask)
        # Equal up to float rounding: oneDNN's kernels on some CPUs (seen on Intel Xeon) sum
        # in another order for the other call's buffers (6e-8 apart).
        assert a.predicted_iou == pytest.approx(b.predicted_iou, rel=1e-6, abs=1e-6)
        assert a.stability_score == pytest.approx(b.stability_score, rel=1e-6, abs=1e-6)
    # The session turned exactly those seeds into objects.
    assert len(result.obj_ids) == len(reused)


def _propose_embedding_model_input(model, frame: np.ndarray, model_input: torch.Tensor):
    """What seeding did before: the generator runs the encoder on the frame's model input."""
    seeder = AutoSeeder(model, SEED)
    predictor = seeder.generator.predictor
    set_image = predictor.set_image

    def embed(image: np.ndarray) -> None:
        assert image.shape == frame.shape
        predictor.set_features(model.forward_image(model_input), image.shape[:2])

    predictor.set_image = embed
    try:
        return seeder.propose(frame)
    finally:
        predictor.set_image = set_image
