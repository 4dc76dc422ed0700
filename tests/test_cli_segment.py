"""`sam2-stream segment`, run in-process through `streamer.cli.main` with the micro model."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from coco_rle import decode_rle

from sam2_video.checkpoints import CHECKPOINT_DIR_ENV
from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from streamer.batch import segment
from streamer.cli import EXIT_BAD_INPUT, EXIT_FAILURE, build_parser, main

TESTS = Path(__file__).parent
TRUCK = TESTS / "data" / "truck.jpg"
MICRO_CKPT = TESTS / "fixtures" / "reference" / "micro" / "sam2.1_micro.pt"
MICRO = ["--model", "sam2.1_micro", "--checkpoint", str(MICRO_CKPT), "--device", "cpu"]
# Random micro weights give few, large masks; open thresholds keep more than one of them.
FAST_AMG = [
    "--points-per-side",
    "8",
    "--pred-iou-thresh",
    "0",
    "--stability-score-thresh",
    "0",
    "--box-nms-thresh",
    "0.95",
]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("segment")
    return main(["segment", str(TRUCK), *MICRO, *FAST_AMG, "--out", str(out)]), out


def test_segment_writes_coco_json(segmented: tuple[int, Path]) -> None:
    code, out = segmented
    assert code == 0
    truck = cv2.imread(str(TRUCK))
    height, width = truck.shape[:2]
    record = json.loads((out / "truck.json").read_text())
    assert record["image"] == {"file_name": "truck.jpg", "width": width, "height": height}
    assert record["info"]["model"] == "sam2.1_micro"
    assert record["info"]["mask_generator"]["points_per_side"] == 8
    assert record["info"]["mask_generator"]["box_nms_thresh"] == 0.95
    annotations = record["annotations"]
    assert len(annotations) >= 2
    assert [ann["id"] for ann in annotations] == list(range(1, len(annotations) + 1))
    for ann in annotations:
        rle = ann["segmentation"]
        assert isinstance(rle["counts"], str)
        mask = decode_rle(rle)
        assert mask.shape == (height, width)
        assert ann["area"] == int(mask.sum()) > 0
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert 0.0 <= ann["stability_score"] <= 1.0
        assert isinstance(ann["predicted_iou"], float)
        assert ann["crop_box"] == [0, 0, width, height]
        [[px, py]] = ann["point_coords"]
        assert 0 <= px < width and 0 <= py < height


def test_segment_writes_overlay(segmented: tuple[int, Path]) -> None:
    _, out = segmented
    overlay = cv2.imread(str(out / "truck_overlay.png"))
    truck = cv2.imread(str(TRUCK))
    assert overlay is not None and overlay.shape == truck.shape
    record = json.loads((out / "truck.json").read_text())
    smallest = min(record["annotations"], key=lambda ann: ann["area"])
    inside = decode_rle(smallest["segmentation"])
    # The smallest mask is drawn last, so its pixels are recoloured wherever it is.
    changed = np.abs(overlay.astype(int) - truck.astype(int)).sum(axis=-1) > 6
    assert changed[inside].mean() > 0.9


def test_cli_defaults_match_the_generator() -> None:
    args = build_parser().parse_args(["segment", "x.jpg"])
    signature = inspect.signature(SAM2AutomaticMaskGenerator.__init__).parameters
    for name in segment.AMG_PARAMETERS:
        assert getattr(args, name) == signature[name].default, name
    assert args.model == "sam2.1_hiera_t"


def test_missing_default_checkpoint_explains_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "ckpts"))
    out = tmp_path / "out"
    assert main(["segment", str(TRUCK), "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "sam2.1_hiera_tiny.pt" in err
    assert "checkpoints/download_ckpts.sh" in err
    assert "--download" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_explicit_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pt"
    args = ["segment", str(TRUCK), "--model", "sam2.1_micro", "--checkpoint", str(missing)]
    assert main([*args, "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, b"definitely not a jpeg", b""])
def test_unreadable_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    image = tmp_path / "photo.jpg"
    if content is not None:
        image.write_bytes(content)
    assert main(["segment", str(image), *MICRO, "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "photo.jpg" in err and "image" in err
    assert not (tmp_path / "out").exists()


def test_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["segment", str(TRUCK), "--model", "sam3_giant", "--out", str(tmp_path)]
    assert main(args) == EXIT_BAD_INPUT
    assert "unknown model 'sam3_giant'" in capsys.readouterr().err


def test_checkpoint_of_another_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["segment", str(TRUCK), "--model", "sam2_hiera_t", "--checkpoint", str(MICRO_CKPT)]
    assert main([*args, "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "sam2_hiera_t" in err and "Traceback" not in err


def test_invalid_generator_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["segment", str(TRUCK), *MICRO, "--points-per-side", "0", "--out", str(tmp_path)]
    assert main(args) == EXIT_BAD_INPUT
    assert "points_per_side" in capsys.readouterr().err


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = ["segment", str(TRUCK), *MICRO, "--out", str(blocker / "x")]
    assert main(args) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err


def test_bad_device_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["segment", str(TRUCK), "--device", "tpu"])
    assert info.value.code == 2


def test_segment_shows_progress_over_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    amg = ["--points-per-side", "4", "--points-per-batch", "8"]  # 16 points: 2 batches
    assert main(["segment", str(TRUCK), *MICRO, *amg, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "truck.jpg" in err and "3/3" in err  # one image embedding + two point batches
