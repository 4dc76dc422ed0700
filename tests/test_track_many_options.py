"""`track-many` reruns honour changed options, and the Ray engine fails fast on a cluster
that cannot hold one actor (rather than waiting forever for a GPU).

Two 4-frame clips, the micro model on the local engine (CPU); the manifest records each
video's options; a rerun with another format, an edited prompts file or `--force` tracks
again exactly the videos concerned and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MICRO_CHECKPOINT
from test_track_many import _write_clip

from streamer.batch.ray_engine import RayEngineError, _check_resources, run_ray
from streamer.batch.track import plan_track
from streamer.batch.track_many import MANIFEST_NAME
from streamer.batch.video_worker import TrackJob, WorkItem
from streamer.cli import EXIT_OK, main

MICRO = ["--model", "sam2.1_micro", "--checkpoint", str(MICRO_CHECKPOINT)]
CLIPS = ("one", "two")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "videos").mkdir()
    (tmp_path / "prompts").mkdir()
    for number, name in enumerate(CLIPS):
        _write_clip(tmp_path / "videos" / f"{name}.mp4", start=2 * number)
        prompts = [{"frame": 0, "obj_id": 1, "box": [20, 10, 90, 80]}]
        (tmp_path / "prompts" / f"{name}.json").write_text(json.dumps({"prompts": prompts}))
    return tmp_path


def _run(inputs: Path, *extra: str) -> int:
    return main(
        ["track-many", str(inputs / "videos"), "--prompts-dir", str(inputs / "prompts"),
         "--out", str(inputs / "out"), *MICRO, "--threads", "1", "--no-progress",
         "--device", "cpu", *extra]
    )  # fmt: skip


def _rows(inputs: Path) -> list[dict]:
    lines = (inputs / "out" / MANIFEST_NAME).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_changed_options_redo_videos(inputs: Path, capsys) -> None:
    assert _run(inputs, "--format", "coco") == EXIT_OK
    first = _rows(inputs)
    assert [r["options"]["formats"] for r in first] == [["coco"], ["coco"]]
    assert all(r["options"]["prompts_sha256"] for r in first)

    # Same options: nothing to do.
    assert _run(inputs, "--format", "coco") == EXIT_OK
    assert len(_rows(inputs)) == 2
    assert "2 skipped" in capsys.readouterr().out

    # Another format: both videos are tracked again and get their PNGs.
    assert _run(inputs, "--format", "coco,png") == EXIT_OK
    rows = _rows(inputs)[2:]
    assert sorted(Path(r["video"]).stem for r in rows) == sorted(CLIPS)
    assert all(r["options"]["formats"] == ["coco", "png"] for r in rows)
    for name in CLIPS:
        assert (inputs / "out" / name / "png" / name / "00000.png").is_file()
    assert "2 tracked again" in capsys.readouterr().out

    # An edited prompts file: only that video.
    prompts = inputs / "prompts" / "two.json"
    prompts.write_text(prompts.read_text().replace("[20, 10, 90, 80]", "[30, 10, 90, 80]"))
    assert _run(inputs, "--format", "coco,png") == EXIT_OK
    assert [Path(r["video"]).stem for r in _rows(inputs)[4:]] == ["two"]

    # --force: everything, options unchanged.
    assert _run(inputs, "--format", "coco,png", "--force") == EXIT_OK
    assert sorted(Path(r["video"]).stem for r in _rows(inputs)[5:]) == sorted(CLIPS)


def test_gpu_defaults_and_checks() -> None:
    assert _check_resources({"CPU": 4.0}, None, 1.0) == 0.0
    assert _check_resources({"CPU": 4.0, "GPU": 2.0}, None, 1.0) == 1.0
    assert _check_resources({"CPU": 4.0, "GPU": 2.0}, 0.0, 1.0) == 0.0
    with pytest.raises(RayEngineError, match="has 0: use --num-gpus 0"):
        _check_resources({"CPU": 4.0}, 1.0, 1.0)
    with pytest.raises(RayEngineError, match="CPU"):
        _check_resources({"CPU": 2.0}, 0.0, 4.0)


@pytest.mark.timeout(120)
def test_ray_engine_asking_for_a_gpu_on_a_cpu_cluster_fails_fast(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=1,
        num_gpus=0,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        job = TrackJob(plan=plan_track(auto_seed=True), model="sam2.1_micro")
        item = WorkItem(video=str(tmp_path / "x.mp4"), output=str(tmp_path / "x"))
        # Before this check, Ray waited forever for the GPU: the test's timeout catches a hang.
        with pytest.raises(RayEngineError, match="GPU"):
            list(run_ray(job, [item], num_gpus=1.0))
    finally:
        ray.shutdown()
