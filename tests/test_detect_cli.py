"""`sam2-stream track --detector ... --format coco,yolo,sav` and `sam2-stream annotate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import MICRO_CHECKPOINT
from PIL import Image
from test_detect_service import FRAMES, GREEN_FROM, write_walk_in
from ultralytics_env import import_ultralytics

from streamer.cli import main

MICRO = ["--model", "sam2.1_micro", "--checkpoint", str(MICRO_CHECKPOINT)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_walk_in(tmp_path_factory.mktemp("detect_cli") / "walk_in.mp4")


def test_track_with_a_detector_writes_labels(clip: Path, tmp_path: Path) -> None:
    code = main([
        "track", str(clip), "--detector", "detect_fixtures:colour_blobs",
        "--detect-every", str(GREEN_FROM), "--detect-min-score", "0.5",
        "--format", "coco,yolo,sav", "--out", str(tmp_path), "--device", "cpu",
        "--no-progress", *MICRO,
    ])  # fmt: skip
    assert code == 0
    coco = json.loads((tmp_path / "walk_in_coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    by_track = {t["id"]: t["category_id"] for t in coco["tracks"]}
    assert sorted(by_track.values()) == [1, 2]
    green = [a for a in coco["annotations"] if a["category_id"] == 2]
    assert green and min(a["image_id"] for a in green) == GREEN_FROM
    assert all(a["label"] == "green" and a["det_score"] == pytest.approx(0.8) for a in green)

    folder = tmp_path / "walk_in_yolo"
    assert yaml.safe_load((folder / "data.yaml").read_text())["names"] == {0: "red", 1: "green"}
    rows = [(folder / "labels" / f"{i:05d}.txt").read_text().splitlines() for i in range(FRAMES)]
    assert [len(r) for r in rows] == [1] * GREEN_FROM + [2] * (FRAMES - GREEN_FROM)
    assert sorted(r.split()[0] for r in rows[-1]) == ["0", "1"]

    # Detector-seeded masklets were never prompted by a user: SA-V's "auto" file holds them.
    sav = json.loads((tmp_path / "walk_in_auto.json").read_text())
    assert sav["masklet_label"] == ["red", "green"] and sav["masklet_class_id"] == [0, 1]
    assert json.loads((tmp_path / "walk_in_manual.json").read_text())["masklet_num"] == 0


def test_track_detector_errors_are_bad_input(clip: Path, tmp_path: Path, capsys) -> None:
    base = ["track", str(clip), "--out", str(tmp_path), "--device", "cpu", "--no-progress"]
    assert main([*base, "--detector", "no such detector", *MICRO]) == 2
    assert "unknown detector" in capsys.readouterr().err
    assert main([*base, "--detector", "/missing/yolov8n.pt", *MICRO]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([*base, "--detector", "detect_fixtures:colour_blobs", "--text", " ", *MICRO]) == 2
    assert "text names no class" in capsys.readouterr().err


def test_annotate_command(tmp_path: Path) -> None:
    ultralytics = import_ultralytics()
    torch.manual_seed(0)
    yolo = ultralytics.YOLO("yolov8n.yaml")
    yolo.save(str(tmp_path / "tiny.pt"))
    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(images / name)
    code = main([
        "annotate", str(images), "--det-model", str(tmp_path / "tiny.pt"), "--model",
        str(MICRO_CHECKPOINT), "--conf", "0.0001", "--imgsz", "160", "--max-det", "3",
        "--device", "cpu", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    out = tmp_path / "photos_auto_annotate_labels"  # Ultralytics' default folder name
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    for label in out.iterdir():
        rows = label.read_text().splitlines()
        assert 1 <= len(rows) <= 3
        values = [float(v) for v in rows[0].split()[1:]]
        assert len(values) >= 6 and all(0.0 <= v <= 1.0 for v in values)


def test_track_many_with_a_detector(clip: Path, tmp_path: Path) -> None:
    code = main([
        "track-many", str(clip), "--detector", "detect_fixtures:colour_blobs",
        "--detect-every", str(GREEN_FROM), "--format", "yolo", "--out", str(tmp_path),
        "--device", "cpu", "--no-progress", *MICRO,
    ])  # fmt: skip
    assert code == 0
    labels = tmp_path / "walk_in" / "walk_in_yolo" / "labels"
    assert len((labels / f"{FRAMES - 1:05d}.txt").read_text().splitlines()) == 2
