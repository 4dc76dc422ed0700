"""`sam2-stream track`, run in-process through `streamer.cli.main` with the micro model.

One prompted run on an 8-frame 320x180 clip writes every format; each output is read back
with an independent reader (json, pycocotools, Pillow, PyAV) and checked against the others.
Bad input must exit 2 with a clear message before the model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from coco_rle import decode_rle
from PIL import Image
from pycocotools import mask as mask_api

from sam2_video import FrameResult
from sam2_video.predictors.auto_seed import AutoSeedOptions
from streamer.batch.outputs import VideoInfo, parse_formats
from streamer.batch.outputs.mp4 import OverlayVideoWriter
from streamer.batch.outputs.png import davis_palette
from streamer.cli import _SEED_VALUE_OPTIONS, EXIT_BAD_INPUT, main
from streamer.ingest.slot import VideoFrame

TESTS = Path(__file__).parent
BEDROOM = TESTS / "data" / "bedroom.mp4"
MICRO_CKPT = TESTS / "fixtures" / "reference" / "micro" / "sam2.1_micro.pt"
MICRO = ["--model", "sam2.1_micro", "--checkpoint", str(MICRO_CKPT), "--device", "cpu"]
WIDTH, HEIGHT, FPS, FRAMES = 320, 180, 30, 8
NEW_OBJECT = 3  # the session's id for the object prompted without obj_id: the first free one


def _rle(mask: np.ndarray) -> dict:
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("track_clip") / "room.mp4"
    with av.open(str(BEDROOM)) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i, decoded in enumerate(source.decode(video=0)):
            if i == FRAMES:
                break
            frame = decoded.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _prompt_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[100:170, 200:300] = True
    return mask


@pytest.fixture(scope="module")
def tracked(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("track_out")
    prompts = folder / "prompts.json"
    prompts.write_text(
        json.dumps(
            {
                "prompts": [
                    {"frame": 4, "points": [[60, 150]], "labels": [1]},  # new object
                    {"frame": 0, "obj_id": 1, "box": [100, 20, 220, 170]},
                    {"frame": 0, "obj_id": 2, "points": [[40, 60], [60, 80]], "labels": [1, 0]},
                    {"frame": 2, "obj_id": 5, "mask_rle": _rle(_prompt_mask())},
                    {"frame": 100, "obj_id": 9, "box": [0, 0, 10, 10]},  # past the end: unused
                ]
            }
        )
    )
    out = folder / "out"
    code = main(
        ["track", str(clip), "--prompts", str(prompts), "--out", str(out), *MICRO,
         "--format", "coco,sav", "--format", "png", "--format", "mp4", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def coco_masks(tracked: Path) -> dict[tuple[int, int], np.ndarray]:
    """(frame, track id) -> (H, W) bool, from the COCO output."""
    record = json.loads((tracked / "room_coco.json").read_text())
    return {
        (a["image_id"], a["track_id"]): decode_rle(a["segmentation"]) for a in record["annotations"]
    }


def test_coco_output(tracked: Path) -> None:
    record = json.loads((tracked / "room_coco.json").read_text())
    assert record["videos"] == [
        {"id": 1, "name": "room", "width": WIDTH, "height": HEIGHT, "length": FRAMES, "fps": 30.0}
    ]
    assert [image["id"] for image in record["images"]] == list(range(FRAMES))
    assert all(image["width"] == WIDTH and image["height"] == HEIGHT for image in record["images"])
    assert record["images"][3]["time"] == pytest.approx(3 / FPS)
    assert record["categories"] == [{"id": 1, "name": "object"}]
    annotations = record["annotations"]
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    assert {a["track_id"] for a in annotations} == {1, 2, 5, NEW_OBJECT}
    for a in annotations:
        assert 0 <= a["image_id"] < FRAMES
        assert isinstance(a["segmentation"]["counts"], str)
        mask = decode_rle(a["segmentation"])
        assert mask.shape == (HEIGHT, WIDTH)
        assert a["area"] == int(mask.sum()) > 0
        ys, xs = np.nonzero(mask)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert 0.0 <= a["score"] <= 1.0 and a["iscrowd"] == 0 and a["category_id"] == 1
    frames_of = {
        t: {a["image_id"] for a in annotations if a["track_id"] == t} for t in (5, NEW_OBJECT)
    }
    assert min(frames_of[5]) == 2 and min(frames_of[NEW_OBJECT]) == 4  # prompted frames
    tracks = {t["id"]: t for t in record["tracks"]}
    assert tracks[5]["first_frame"] == 2 and tracks[5]["frames"] == len(frames_of[5])


def test_mask_prompt_is_taken_on_its_frame(coco_masks: dict) -> None:
    # The micro model has random weights, but a mask prompt's own frame echoes the mask
    # closely: it is the strongest constraint the model gets.
    got, want = coco_masks[(2, 5)], _prompt_mask()
    assert (got & want).sum() / (got | want).sum() > 0.5


def test_sav_output(tracked: Path, coco_masks: dict) -> None:
    record = json.loads((tracked / "room_manual.json").read_text())
    auto = json.loads((tracked / "room_auto.json").read_text())  # nothing was auto-seeded
    assert auto["masklet_num"] == 0 and auto["masklet"] == [[]] * FRAMES
    assert record["annot_sample_rate"] == auto["annot_sample_rate"] == 1
    assert record["video_id"] == "room"
    assert record["video_frame_count"] == float(FRAMES)
    assert (record["video_height"], record["video_width"]) == (float(HEIGHT), float(WIDTH))
    assert record["video_resolution"] == float(HEIGHT * WIDTH)
    assert record["video_duration"] == pytest.approx(FRAMES / FPS)
    ids = record["masklet_id"]
    assert ids == [1, 2, 5, NEW_OBJECT] and record["masklet_num"] == 4
    masklet = record["masklet"]
    assert len(masklet) == FRAMES and all(len(row) == 4 for row in masklet)
    areas = np.zeros((FRAMES, 4))
    for frame, row in enumerate(masklet):
        for k, rle in enumerate(row):
            mask = decode_rle(rle)
            assert mask.shape == (HEIGHT, WIDTH)
            expected = coco_masks.get((frame, ids[k]), np.zeros((HEIGHT, WIDTH), bool))
            np.testing.assert_array_equal(mask, expected)
            areas[frame, k] = mask.sum()
    assert not areas[:2, 2].any() and not areas[:4, 3].any()  # before they were prompted
    visible = areas > 0
    size_abs = [areas[visible[:, k], k].mean() for k in range(4)]
    np.testing.assert_allclose(record["masklet_size_abs"], size_abs)
    np.testing.assert_allclose(record["masklet_size_rel"], np.array(size_abs) / (HEIGHT * WIDTH))
    assert record["masklet_first_appeared_frame"] == [
        int(np.argmax(visible[:, k])) for k in range(4)
    ]
    assert record["masklet_frame_count"] == [8, 8, 6, 4]
    assert record["masklet_edited_frame_count"] == [1, 1, 1, 1]
    assert record["masklet_type"] == ["manual"] * 4
    assert all(b in ("small", "medium", "large") for b in record["masklet_size_bucket"])
    assert all(isinstance(n, int) for n in record["masklet_visibility_changes"])


def test_png_output(tracked: Path, coco_masks: dict) -> None:
    folder = tracked / "png" / "room"  # named after the video, nothing but the frames inside
    metadata = json.loads((tracked / "room_png.json").read_text())
    assert metadata == {
        "video": "room", "layout": "indexed", "folder": "png/room", "frames": FRAMES,
        "obj_ids": [1, 2, 5, NEW_OBJECT],
    }  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(FRAMES)]
    for frame in range(FRAMES):
        with Image.open(folder / f"{frame:05d}.png") as image:
            assert image.mode == "P"
            assert (
                image.getpalette()[:12]
                == davis_palette()[:12]
                == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
            )
            labels = np.array(image)
        expected = np.zeros((HEIGHT, WIDTH), np.uint8)
        for obj_id in sorted(metadata["obj_ids"], reverse=True):  # the smallest id wins overlaps
            mask = coco_masks.get((frame, obj_id))
            if mask is not None:
                expected[mask] = obj_id  # the pixel value is the object id
        np.testing.assert_array_equal(labels, expected)


def test_mp4_output(tracked: Path, clip: Path) -> None:
    with av.open(str(tracked / "room_overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == FPS
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == FRAMES
    assert all(f.shape == (HEIGHT, WIDTH, 3) for f in frames)
    with av.open(str(clip)) as container:
        plain = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # The overlay is visible: frames differ from the input far beyond compression noise.
    diff = np.abs(frames[3].astype(int) - plain[3].astype(int)).mean()
    assert diff > 10


def test_auto_seed(clip: Path, tmp_path: Path) -> None:
    # Open thresholds: the micro model's random weights give few confident masks.
    code = main(
        ["track", str(clip), "--auto-seed", "--out", str(tmp_path), *MICRO, "--max-frames", "2",
         "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
         "--format", "sav", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((tmp_path / "room_auto.json").read_text())
    assert json.loads((tmp_path / "room_manual.json").read_text())["masklet_num"] == 0
    assert record["video_frame_count"] == 2.0 and len(record["masklet"]) == 2
    assert record["masklet_num"] >= 1
    assert record["masklet_type"] == ["auto"] * record["masklet_num"]
    assert record["masklet_first_appeared_frame"] == [0] * record["masklet_num"]


def test_seed_flag_defaults_match_auto_seed_options() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(AutoSeedOptions)}
    for flag, _, default, _ in _SEED_VALUE_OPTIONS:
        assert defaults[flag[2:].replace("-", "_")] == default, flag


# --- bad input: exit 2, a clear message, nothing written, no model loaded -------------------


def _track(tmp_path: Path, *args: str) -> int:
    return main(["track", *args, "--out", str(tmp_path / "out"), *MICRO, "--no-progress"])


def test_missing_video(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _track(tmp_path, str(tmp_path / "nope.mp4"), "--auto-seed") == EXIT_BAD_INPUT
    assert "video not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_corrupt_video(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = tmp_path / "broken.mp4"
    video.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert _track(tmp_path, str(video), "--auto-seed") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("sam2-stream track: error: cannot read video") and "broken.mp4" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"prompts": [{"frame": 0, "points": [[1, 2]], "labels": [2]}]}', "prompt 0: labels.0"),
        ('[{"frame": 0, "obj_id": 1}]', "prompt 0: needs points (with labels), a box, or mask_rle"),
        ('[{"frame": 0, "points": [[1, 2]]}]', "points and labels go together"),
        ('[{"frame": -1, "box": [0, 0, 5, 5]}]', "prompt 0: frame"),
        ('[{"frame": 0, "box": [0, 0, 5, 5], "colour": 1}]', "colour: Extra inputs"),
        ('[{"frame": 0, "box": [5, 0, 1, 5]}]', "x0 < x1"),
        ('[{"frame": 0, "box": [0, 0, 5, 5]}, {"frame": 1, "points": [[400, 5]], "labels": [1]}]',
         "prompt 1: (400.0, 5.0) lies outside the 320x180 frame"),
        ('[{"frame": 0, "mask_rle": {"size": [10, 10], "counts": "0"}}]',
         "not the video's [180, 320]"),
        ('[{"frame": 0, "mask_rle": {"size": [180, 320], "counts": "PPPP"}}]', "mask_rle: "),
        ('[{"frame": 0, "mask_rle": {"size": [180, 320], "counts": "PXh1"}}]', "mask_rle is empty"),
        ('{"points": []}', "prompts: Field required"),
    ],
)  # fmt: skip
def test_bad_prompts_file(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture, content: str, message: str
) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(content)
    assert _track(tmp_path, str(clip), "--prompts", str(prompts)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("sam2-stream track: error: prompts file") and message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_prompts_file(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _track(tmp_path, str(clip), "--prompts", str(tmp_path / "none.json")) == EXIT_BAD_INPUT
    assert "cannot read prompts file" in capsys.readouterr().err


def test_unknown_format(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _track(tmp_path, str(clip), "--auto-seed", "--format", "coco,gif") == EXIT_BAD_INPUT
    assert "unknown output format 'gif'" in capsys.readouterr().err


def test_prompts_or_auto_seed_is_required(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        _track(tmp_path, str(clip))
    assert exited.value.code == EXIT_BAD_INPUT


def test_parse_formats() -> None:
    assert parse_formats(["coco,png", "mp4", "COCO"]) == ["coco", "png", "mp4"]
    assert parse_formats(None) == ["coco"]
    with pytest.raises(ValueError, match="unknown output format"):
        parse_formats(["avi"])


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_overlay_video_pads_odd_sizes(tmp_path: Path, codec: str) -> None:
    info = VideoInfo(name="odd", width=97, height=55, fps=Fraction(30000, 1001))
    writer = OverlayVideoWriter(tmp_path, info, codec=codec)
    masks = np.zeros((1, 55, 97), bool)
    masks[0, 10:50, 20:90] = True
    for i in range(3):
        result = FrameResult(
            frame_idx=i, pts=i, obj_ids=[1], masks=masks, object_scores=np.ones(1, np.float32),
            ious=np.ones(1, np.float32), boxes=np.zeros((1, 4), np.float32),
        )  # fmt: skip
        writer.write(VideoFrame(image=np.zeros((55, 97, 3), np.uint8), index=i), result)
    assert writer.close() == [tmp_path / "odd_overlay.mp4"]
    with av.open(str(tmp_path / "odd_overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == {"libx264": "h264", "mpeg4": "mpeg4"}[codec]
        assert stream.average_rate == Fraction(30000, 1001)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 3 and decoded[0].shape == (56, 98, 3)
    # The object's colour shows inside its mask on the black frame (away from the id label
    # at its top-left corner), not outside it.
    assert decoded[0][35:48, 50:85].mean() > 60 and decoded[0][:, 93:].mean() < 20
