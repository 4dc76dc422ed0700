"""Auto-seeding: which generated masks become objects, and the session integration on the
real clip (first frame, periodic re-seeding, fresh ids, the objects cap)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from sam2_video import SessionOptions, StreamingSession
from sam2_video.predictors.auto_seed import AutoSeeder, AutoSeedOptions, SeedMask, select_uncovered

CLIP = Path(__file__).parent / "data" / "bedroom.mp4"
CLIP_HW = (180, 320)

# The micro model has random weights: its masks are large textures, so box-NMS would collapse
# them into one. No box-NMS and lower quality bars give several masks per frame; 4 x 4 points
# keep the generator fast.
SEED = AutoSeedOptions(
    points_per_side=4,
    pred_iou_thresh=0.5,
    stability_score_thresh=0.8,
    box_nms_thresh=1.0,
)


@pytest.fixture(scope="module")
def clip_frames() -> np.ndarray:
    """First 10 frames of the real clip, decoded with PyAV and downscaled to 320 x 180."""
    frames = []
    with av.open(str(CLIP)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(rgb, CLIP_HW[::-1], interpolation=cv2.INTER_AREA))
            if len(frames) == 10:
                break
    return np.stack(frames)


class SeedingSpy:
    """Records what `AutoSeeder.propose_steps` was given and returned, call by call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, session: StreamingSession) -> None:
        self.calls: list[dict] = []
        propose_steps = AutoSeeder.propose_steps

        def spy(seeder, image, covered=None, limit=None, *, features=None):
            seeds = yield from propose_steps(seeder, image, covered, limit, features=features)
            self.calls.append(
                {
                    "frame_idx": session.frame_idx,
                    "image": image,
                    "covered": covered,
                    "limit": limit,
                    "seeds": seeds,
                    "ids_before": session.obj_ids,
                }
            )
            return seeds

        monkeypatch.setattr(AutoSeeder, "propose_steps", spy)


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def seed(mask: np.ndarray, iou: float, stability: float = 0.9) -> SeedMask:
    return SeedMask(mask=mask, area=int(mask.sum()), predicted_iou=iou, stability_score=stability)


# ---------------------------------------------------------------------------- options / selection
def test_options_are_validated():
    for bad in (
        {"max_objects": 0},
        {"reseed_every": 0},
        {"coverage_threshold": 0.0},
        {"coverage_threshold": 1.5},
        {"min_area": -1},
    ):
        with pytest.raises(ValueError):
            AutoSeedOptions(**bad)
    kwargs = AutoSeedOptions().generator_kwargs()
    assert kwargs["points_per_side"] == 16 and kwargs["output_mode"] == "binary_mask"
    assert kwargs["pred_iou_thresh"] == 0.8 and kwargs["stability_score_thresh"] == 0.95


def test_select_uncovered_ranks_and_skips_covered_masks():
    h, w = 20, 20
    covered = rect(h, w, 0, 10, 0, 10)  # top-left quadrant is tracked
    half_covered = seed(rect(h, w, 0, 10, 5, 15), iou=0.95)  # exactly 50% covered
    mostly_free = seed(rect(h, w, 0, 10, 6, 16), iou=0.90)  # 40% covered
    best_free = seed(rect(h, w, 10, 20, 0, 20), iou=0.99)
    part_of_best = seed(rect(h, w, 12, 18, 2, 8), iou=0.97)  # inside a better kept mask
    tiny = seed(rect(h, w, 0, 2, 18, 20), iou=0.98)  # 4 pixels
    empty = seed(np.zeros((h, w), bool), iou=1.0)
    candidates = [half_covered, mostly_free, best_free, part_of_best, tiny, empty]

    names = {
        id(half_covered): "half_covered",
        id(mostly_free): "mostly_free",
        id(best_free): "best_free",
        id(part_of_best): "part_of_best",
        id(tiny): "tiny",
        id(empty): "empty",
    }

    def select(covered, **kwargs) -> list[str]:
        return [names[id(k)] for k in select_uncovered(candidates, covered, **kwargs)]

    assert select(covered, coverage_threshold=0.5, min_area=5) == ["best_free", "mostly_free"]
    # Nothing tracked yet: only masks overlapping a better one are skipped.
    assert select(None, coverage_threshold=0.5, min_area=0) == [
        "best_free",
        "tiny",
        "half_covered",
    ]
    # A threshold of 1.0 only skips masks entirely inside tracked ones.
    assert select(covered, coverage_threshold=1.0, min_area=0) == [
        "best_free",
        "tiny",
        "half_covered",
        "mostly_free",
    ]
    # The limit keeps the best ones; the input covered map is not modified.
    before = covered.copy()
    assert select(covered, coverage_threshold=1.0, min_area=0, limit=2) == ["best_free", "tiny"]
    np.testing.assert_array_equal(covered, before)


def test_seeder_proposes_generator_masks(micro_model, clip_frames):
    seeder = AutoSeeder(micro_model, SEED)
    generated = seeder.generator.generate(clip_frames[0])
    assert len(generated) > 2
    seeds = seeder.propose(clip_frames[0])
    assert 2 <= len(seeds) < len(generated)
    masks = [g["segmentation"] for g in generated]
    for s in seeds:
        assert s.mask.shape == CLIP_HW and s.mask.dtype == bool
        assert any(np.array_equal(s.mask, m) for m in masks)
    assert [s.predicted_iou for s in seeds] == sorted(
        (s.predicted_iou for s in seeds), reverse=True
    )
    # Everything covered: nothing proposed. A limit of 0 does not even run the generator.
    assert seeder.propose(clip_frames[0], covered=np.ones(CLIP_HW, bool)) == []
    assert seeder.propose(clip_frames[0], limit=0) == []
    with pytest.raises(ValueError):
        seeder.propose(clip_frames[0], covered=np.ones((10, 10), bool))


# ---------------------------------------------------------------------------- session, real clip
def test_auto_seed_on_first_frame_and_every_n_frames(micro_model, clip_frames, monkeypatch):
    options = dataclasses.replace(SEED, reseed_every=3)
    session = StreamingSession(micro_model, SessionOptions(auto_seed=options, max_objects=32))
    spy = SeedingSpy(monkeypatch, session)

    first = session.add_frame(clip_frames[0])
    assert len(first.obj_ids) >= 2
    assert first.obj_ids == list(range(1, len(first.obj_ids) + 1))  # distinct fresh ids
    assert all(first.masks[i].any() for i in range(len(first.obj_ids)))
    np.testing.assert_array_equal(spy.calls[0]["image"], clip_frames[0])  # the exact frame
    # Each object starts from its seed mask (a mask prompt: score +10, a conditioning frame).
    for i, s in enumerate(spy.calls[0]["seeds"]):
        iou = (first.masks[i] & s.mask).sum() / (first.masks[i] | s.mask).sum()
        assert iou > 0.9
    assert (first.object_scores == 10.0).all()

    used_ids = set(first.obj_ids)
    results = [first] + [session.add_frame(f) for f in clip_frames[1:]]
    assert [c["frame_idx"] for c in spy.calls] == [0, 3, 6, 9]
    for call in spy.calls[1:]:
        t = call["frame_idx"]
        result = results[t]
        before = call["ids_before"]
        new = result.obj_ids[len(before) :]
        assert result.obj_ids[: len(before)] == before
        assert len(new) == len(call["seeds"])
        # Fresh ids, never used before; tracked objects keep theirs.
        assert new == sorted(new) and all(obj_id > max(used_ids) for obj_id in new)
        used_ids |= set(new)
        # "Covered" is exactly the union of the tracked masks on that frame...
        np.testing.assert_array_equal(call["covered"], result.masks[: len(before)].any(axis=0))
        # ...and only masks mostly outside it were added.
        union = call["covered"].copy()
        for s in call["seeds"]:
            assert (s.mask & union).sum() < options.coverage_threshold * s.mask.sum()
            union |= s.mask
    assert len(used_ids) > len(first.obj_ids)  # re-seeding did find new objects

    # Removed objects' ids are not reused by the next seeding.
    session.remove_object(1)
    reseeded = session.auto_seed()
    assert 1 not in reseeded.obj_ids
    new = set(reseeded.obj_ids) - set(results[-1].obj_ids)
    assert all(obj_id > max(used_ids) for obj_id in new)


def test_auto_seed_respects_the_objects_cap(micro_model, clip_frames, monkeypatch):
    # The seeding cap: seeding stops once the session tracks 3 objects.
    options = dataclasses.replace(SEED, reseed_every=1, max_objects=3)
    session = StreamingSession(micro_model, SessionOptions(auto_seed=options))
    spy = SeedingSpy(monkeypatch, session)
    counts = [len(session.add_frame(f).obj_ids) for f in clip_frames[:4]]
    assert max(counts) == 3 and counts == sorted(counts)
    assert all(c["limit"] == 3 - len(c["ids_before"]) for c in spy.calls)
    assert spy.calls[-1]["frame_idx"] < 3  # at the cap the generator no longer runs

    # The session's own cap applies to seeding too, and counts prompted objects.
    session = StreamingSession(micro_model, SessionOptions(max_objects=2, auto_seed=SEED))
    assert len(session.add_frame(clip_frames[0]).obj_ids) == 2
    session.remove_object(2)
    session.add_points(None, np.array([[60.0, 120.0]]), np.array([1]))
    calls = len(spy.calls)
    assert len(session.auto_seed().obj_ids) == 2
    assert len(spy.calls) == calls


def test_auto_seed_on_demand(micro_model, clip_frames):
    session = StreamingSession(micro_model, SessionOptions())
    assert session.add_frame(clip_frames[0]).obj_ids == []  # no seeding configured
    seeded = session.auto_seed(SEED)
    assert seeded.frame_idx == 0 and len(seeded.obj_ids) >= 2
    # Seeding the same frame again finds everything covered.
    assert session.auto_seed(SEED).obj_ids == seeded.obj_ids
    tracked = session.add_frame(clip_frames[1])
    assert tracked.obj_ids == seeded.obj_ids
    assert all(0 in session.objects[i].conditioning for i in seeded.obj_ids)
