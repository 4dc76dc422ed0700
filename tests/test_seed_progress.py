"""`track`'s first-frame seeding under a progress bar gives what `add_frame` gives."""

from __future__ import annotations

import av
import numpy as np
from conftest import DATA

from sam2_video.predictors.auto_seed import AutoSeedOptions
from sam2_video.predictors.streaming import SessionOptions, StreamingSession
from streamer.batch.seed_progress import track_frame

# Open thresholds: the micro model's random weights give few confident masks.
SEEDING = AutoSeedOptions(
    points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_objects=4
)


def _frames(count: int) -> list[np.ndarray]:
    with av.open(str(DATA / "bedroom.mp4")) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.reformat(width=320, height=180).to_ndarray(format="rgb24"))
            if len(frames) == count:
                return frames
    return frames


def test_seeding_with_a_bar_equals_add_frame(micro_model, capsys):
    options = SessionOptions(max_objects=8, lost_after=None, auto_seed=SEEDING)
    plain = StreamingSession(micro_model, options)
    shown = StreamingSession(micro_model, options)
    steps: list[tuple[int, int]] = []
    for index, image in enumerate(_frames(3)):
        want = plain.add_frame(image, pts=index)
        got = track_frame(
            shown, image, index, name="clip", progress=True, on_step=lambda *a: steps.append(a)
        )
        assert got.frame_idx == want.frame_idx and got.obj_ids == want.obj_ids
        np.testing.assert_array_equal(got.masks, want.masks)
    assert want.obj_ids, "seeding found no object: the comparison would mean little"
    total = steps[0][1]
    assert [done for done, _ in steps] == list(range(1, len(steps) + 1)) and len(steps) <= total
    err = capsys.readouterr().err
    assert "clip: seeding frame 0" in err and "seeding frame 1" not in err
