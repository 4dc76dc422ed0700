"""`track`'s outputs read by the official SAM 2 tools, unmodified:

- `sav_dataset/sav_evaluator.py` scores the PNGs of a run against those of a second run
  (J&F 100), in both layouts (DAVIS-style indexed PNGs and SA-V's per-object PNGs);
- the indexed PNGs equal the rendering of `tools/vos_inference.py`'s own `put_per_obj_mask` /
  `save_ann_png` (palette value = object id, the smallest id on top where masks overlap);
- `sav_dataset/utils/sav_utils.py`'s `SAVDataset` reads the SA-V JSON next to the video.

The official code comes from the checkout named by `SAM2_SRC` (facebookresearch/sam2 at
2b90b9f, as for bench/official.py; never part of this repository); without it these tests
skip, saying so. Its evaluator needs scikit-image (the `test` extra).
Also here: the COCO JSON's `file_name`s exist when `--write-frames` is given.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_track_cli
from coco_rle import decode_rle
from PIL import Image
from pycocotools import mask as mask_api
from test_track_cli import FRAMES, HEIGHT, MICRO, WIDTH, _rle

from streamer.cli import EXIT_BAD_INPUT, main

clip = test_track_cli.clip  # the 8-frame 320x180 clip fixture, used here by name
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

_NEEDED = (
    "sav_dataset/sav_evaluator.py",
    "sav_dataset/utils/sav_utils.py",
    "tools/vos_inference.py",
)


@pytest.fixture(scope="module")
def sam2_src() -> Path:
    value = os.environ.get("SAM2_SRC")
    if not value:
        pytest.skip("SAM2_SRC (a facebookresearch/sam2 checkout at 2b90b9f) is not set")
    root = Path(value)
    missing = [name for name in _NEEDED if not (root / name).is_file()]
    if missing:
        pytest.skip(f"SAM2_SRC={root} lacks {', '.join(missing)}")
    return root


def _box_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three objects whose first-frame masks overlap, given in decreasing id order (so that
    "smallest id on top" and "added last on top" differ)."""
    path = tmp_path_factory.mktemp("official_prompts") / "prompts.json"
    entries = [
        {"frame": 0, "obj_id": 9, "mask_rle": _rle(_box_mask(40, 20, 240, 160))},
        {"frame": 0, "obj_id": 4, "mask_rle": _rle(_box_mask(120, 60, 300, 175))},
        {"frame": 0, "obj_id": 2, "mask_rle": _rle(_box_mask(80, 40, 200, 120))},
    ]
    path.write_text(json.dumps({"prompts": entries}))
    return path


def _track(clip: Path, prompts: Path, out: Path, *extra: str) -> Path:
    code = main(
        ["track", str(clip), "--prompts", str(prompts), "--out", str(out), *MICRO,
         "--no-progress", *extra]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def runs(clip: Path, prompts: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two identical runs writing COCO, SA-V and indexed PNGs."""
    return [
        _track(clip, prompts, tmp_path_factory.mktemp(f"run{i}"), "--format", "coco,sav,png")
        for i in range(2)
    ]


def _evaluate(sam2_src: Path, gt_root: Path, pred_root: Path) -> float:
    """Global J&F of the official evaluator (its own process, as users run it)."""
    result = subprocess.run(
        [sys.executable, "sav_evaluator.py", "--gt_root", str(gt_root),
         "--pred_root", str(pred_root), "-n", "1"],
        cwd=sam2_src / "sav_dataset", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Global score: J&F: ([\d.]+)", result.stdout)
    assert match, result.stdout
    return float(match.group(1))


def test_sav_evaluator_scores_a_second_run_100(sam2_src: Path, runs: list[Path]) -> None:
    first, second = (run / "png" for run in runs)
    assert sorted(p.name for p in first.iterdir()) == ["room"]
    assert _evaluate(sam2_src, first, second) == 100.0


def test_sav_evaluator_reads_the_per_object_layout(
    sam2_src: Path, clip: Path, prompts: Path, tmp_path: Path
) -> None:
    outs = [
        _track(clip, prompts, tmp_path / f"run{i}", "--format", "png", "--png-layout", "per-object")
        for i in range(2)
    ]
    video = outs[0] / "png" / "room"
    assert sorted(p.name for p in video.iterdir()) == ["002", "004", "009"]
    assert sorted(p.name for p in (video / "004").iterdir()) == [
        f"{i:05d}.png" for i in range(FRAMES)
    ]
    with Image.open(video / "004" / "00000.png") as image:
        assert image.mode == "P" and set(np.unique(np.array(image))) <= {0, 1}
    assert _evaluate(sam2_src, outs[0] / "png", outs[1] / "png") == 100.0


def _official_png_functions(sam2_src: Path) -> dict:
    """`DAVIS_PALETTE`, `put_per_obj_mask` and `save_ann_png` of tools/vos_inference.py, run
    from its source (the module itself imports the official `sam2` package)."""
    source = (sam2_src / "tools" / "vos_inference.py").read_text()
    tree = ast.parse(source)
    wanted = {"DAVIS_PALETTE", "put_per_obj_mask", "save_ann_png"}
    nodes = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name in wanted)
        or (isinstance(node, ast.Assign) and {t.id for t in node.targets} & wanted)
    ]
    namespace: dict = {"np": np, "Image": Image}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "vos_inference.py", "exec"), namespace)
    assert wanted <= namespace.keys()
    return namespace


def test_indexed_pngs_equal_the_official_rendering(
    sam2_src: Path, runs: list[Path], tmp_path: Path
) -> None:
    official = _official_png_functions(sam2_src)
    record = json.loads((runs[0] / "room_coco.json").read_text())
    per_frame: dict[int, dict[int, np.ndarray]] = {}
    for a in record["annotations"]:
        per_frame.setdefault(a["image_id"], {})[a["track_id"]] = decode_rle(a["segmentation"])
    overlaps = 0
    for frame in range(FRAMES):
        masks = per_frame.get(frame, {})
        overlaps += int((sum(m.astype(int) for m in masks.values()) > 1).sum()) if masks else 0
        labels = official["put_per_obj_mask"](masks, HEIGHT, WIDTH)
        reference = tmp_path / f"{frame:05d}.png"
        official["save_ann_png"](reference, labels, official["DAVIS_PALETTE"])
        with (
            Image.open(reference) as want,
            Image.open(runs[0] / "png/room" / reference.name) as got,
        ):
            np.testing.assert_array_equal(np.array(got), np.array(want))
            assert got.getpalette() == want.getpalette()
    assert overlaps > 0, "the prompts must make overlapping masks for this test to mean much"


def _load_sav_utils(sam2_src: Path):
    os.environ.setdefault("MPLBACKEND", "Agg")  # sav_utils imports pyplot
    path = sam2_src / "sav_dataset" / "utils" / "sav_utils.py"
    spec = importlib.util.spec_from_file_location("official_sav_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sav_dataset_reader_reads_the_json(
    sam2_src: Path, clip: Path, runs: list[Path], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "sav"
    folder.mkdir()
    shutil.copy(clip, folder / "room.mp4")
    for kind in ("manual", "auto"):
        shutil.copy(runs[0] / f"room_{kind}.json", folder / f"room_{kind}.json")
    rate = json.loads((folder / "room_manual.json").read_text())["annot_sample_rate"]
    dataset = _load_sav_utils(sam2_src).SAVDataset(str(folder), annot_sample_rate=rate)
    frames, manual, auto = dataset.get_frames_and_annotations("room")
    capsys.readouterr()  # the reader prints what it does
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert len(manual["masklet"]) == len(frames) == len(auto["masklet"])
    assert manual["masklet_id"] == [9, 4, 2] and auto["masklet_num"] == 0
    coco = json.loads((runs[0] / "room_coco.json").read_text())
    by_key = {(a["image_id"], a["track_id"]): a["segmentation"] for a in coco["annotations"]}
    for frame, row in enumerate(manual["masklet"]):
        for obj_id, rle in zip(manual["masklet_id"], row):
            got = mask_api.decode(rle) > 0  # as the reader's visualisation decodes them
            want = by_key.get((frame, obj_id))
            expected = decode_rle(want) if want else np.zeros((HEIGHT, WIDTH), bool)
            np.testing.assert_array_equal(got, expected)


def test_coco_file_names_exist_with_write_frames(clip: Path, prompts: Path, tmp_path: Path) -> None:
    out = _track(clip, prompts, tmp_path / "out", "--format", "coco", "--write-frames",
                 "--max-frames", "3")  # fmt: skip
    images = json.loads((out / "room_coco.json").read_text())["images"]
    assert [i["file_name"] for i in images] == [f"frames/room/{i:05d}.jpg" for i in range(3)]
    for image in images:
        with Image.open(out / image["file_name"]) as jpeg:
            assert jpeg.size == (image["width"], image["height"]) == (WIDTH, HEIGHT)


def test_ids_above_255_need_the_per_object_layout(clip: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps({"prompts": [{"frame": 0, "obj_id": 300, "box": [10, 10, 90, 90]}]})
    )
    args = ["track", str(clip), "--prompts", str(prompts), "--out", str(tmp_path / "out"),
            *MICRO, "--no-progress", "--format", "png", "--max-frames", "2"]  # fmt: skip
    assert main(args) == EXIT_BAD_INPUT
    assert "--png-layout per-object" in capsys.readouterr().err
    assert main([*args, "--png-layout", "per-object"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "png" / "room" / "300").iterdir()) == [
        "00000.png",
        "00001.png",
    ]
