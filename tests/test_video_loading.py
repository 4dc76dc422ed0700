"""The offline predictor's frame loading: the official loader's pixels, held compactly."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from pil_bicubic import resize_bicubic

from sam2_video.predictors.video import SAM2VideoPredictor
from sam2_video.utils.video_io import compact_frames, resize_frame

DATA = Path(__file__).parent / "data"
MICRO = Path(__file__).parent / "fixtures" / "reference" / "micro"


@pytest.fixture(scope="module")
def reference_frames():
    return np.load(MICRO / "video_frames.npz")


def _clip_frames(count: int) -> list[np.ndarray]:
    """The first frames of the real clip (960 x 540), RGB."""
    frames = []
    with av.open(str(DATA / "bedroom.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def test_jpeg_folder_of_a_real_clip_gives_the_official_loader_pixels(micro_model, tmp_path):
    """A folder of real JPEGs is decoded by Pillow and resized with its bicubic filter, as the
    official `load_video_frames`; 960x540 frames are held as 256x256 uint8 for the micro model."""
    from PIL import Image

    for i, frame in enumerate(_clip_frames(3)):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    state = SAM2VideoPredictor(micro_model).init_state(tmp_path)
    assert state.video_hw == (540, 960) and state.resize == "pil_bicubic"
    assert state.frames.shape == (3, 256, 256, 3) and state.frames.dtype == np.uint8
    for i in range(3):
        decoded = np.asarray(Image.open(tmp_path / f"{i}.jpg").convert("RGB"))
        # tests/pil_bicubic.py re-implements Pillow's filter independently.
        np.testing.assert_array_equal(state.frames[i], resize_bicubic(decoded, (256, 256)))


def test_folder_reproduces_the_reference_loader(micro_model, tmp_path, reference_frames):
    """The reference frames (PNG data in .jpg files, as the official run read them) load to the
    official 256x256 pixels, and tracking from the folder equals tracking from those pixels
    (which tests/test_video_predictor.py checks against the official masks)."""
    native = reference_frames["frames_uint8"][:4]  # (4, 180, 320, 3)
    for i, frame in enumerate(native):
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        assert ok
        (tmp_path / f"{i}.jpg").write_bytes(png.tobytes())
    pred = SAM2VideoPredictor(micro_model)
    from_folder = pred.init_state(tmp_path)
    # 180x320 has fewer pixels than 256x256: held native, resized at each step.
    assert from_folder.frames.shape == (4, 180, 320, 3)
    for i in range(4):
        np.testing.assert_array_equal(
            resize_frame(from_folder.frames[i], 256, from_folder.resize),
            reference_frames["frames_resized_uint8"][i],
        )
    from_pixels = pred.init_state(reference_frames["frames_resized_uint8"][:4], video_hw=(180, 320))
    results = []
    for state in (from_folder, from_pixels):
        pred.add_new_points_or_box(
            state,
            0,
            1,
            points=np.array([[160.0, 90.0]], np.float32),
            labels=np.array([1], np.int32),
        )
        results.append([m.clone() for _, _, m in pred.propagate_in_video(state)])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_frames_are_held_at_the_smaller_of_native_and_model_size():
    frames = [np.full((540, 960, 3), v, np.uint8) for v in (10, 200)]
    held, hw = compact_frames(frames, 256, "bilinear")
    assert hw == (540, 960) and held.shape == (2, 256, 256, 3) and held.dtype == np.uint8
    np.testing.assert_array_equal(held[1], 200)
    held, hw = compact_frames(frames, 1024, "bilinear")  # 1024x1024 has more pixels: native
    assert hw == (540, 960) and held.shape == (2, 540, 960, 3)
