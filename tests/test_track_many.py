"""`sam2-stream track-many` on a local Ray cluster (CPU, 127.0.0.1) and on the local engine.

4 short clips + 1 corrupt file, micro model, prompts files per clip: every clip's outputs must
be byte-equal to `track` run alone on that clip, the corrupt file must be recorded as failed
while the others go on, and a rerun after an interrupted run must skip what was complete and
redo what was not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from conftest import DATA, MICRO_CHECKPOINT

from streamer.batch.manifest import Manifest, ManifestRow
from streamer.batch.track import plan_track
from streamer.batch.track_many import MANIFEST_NAME, collect_videos, output_names, run_track_many
from streamer.batch.video_worker import PARTIAL_MARK, TrackJob
from streamer.cli import EXIT_FAILURE, EXIT_OK, main

MICRO = ["--model", "sam2.1_micro", "--checkpoint", str(MICRO_CHECKPOINT)]
FORMATS = ["--format", "coco,sav,png"]
WIDTH, HEIGHT, FRAMES = 160, 96, 4
CLIPS = ("alpha", "bravo", "charlie", "delta")


def _write_clip(path: Path, start: int) -> None:
    with av.open(str(DATA / "bedroom.mp4")) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i, decoded in enumerate(source.decode(video=0)):
            if i >= start + FRAMES:
                break
            if i >= start:
                frame = decoded.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
                frame.pts, frame.time_base = i - start, Fraction(1, 30)
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """videos/: 4 clips + corrupt.mp4; prompts/: <stem>.json per clip."""
    root = tmp_path_factory.mktemp("track_many")
    (root / "videos").mkdir()
    (root / "prompts").mkdir()
    for number, name in enumerate(CLIPS):
        _write_clip(root / "videos" / f"{name}.mp4", start=3 * number)
        prompts = [
            {"frame": 0, "obj_id": 1, "box": [20 + 10 * number, 10, 90, 80]},
            {"frame": 2, "points": [[120, 40]], "labels": [1]},
        ]
        (root / "prompts" / f"{name}.json").write_text(json.dumps({"prompts": prompts}))
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    return root


@pytest.fixture(scope="module")
def reference(inputs: Path) -> Path:
    """`track` run alone on each clip, 1 torch thread (as the workers run)."""
    out = inputs / "reference"
    torch.set_num_threads(1)
    for name in CLIPS:
        code = main(
            ["track", str(inputs / "videos" / f"{name}.mp4"), "--prompts",
             str(inputs / "prompts" / f"{name}.json"), "--out", str(out / name), *MICRO,
             "--device", "cpu", *FORMATS, "--no-progress"]
        )  # fmt: skip
        assert code == EXIT_OK
    return out


def _track_many(inputs: Path, out: Path, *engine: str) -> int:
    return main(
        ["track-many", str(inputs / "videos"), "--prompts-dir", str(inputs / "prompts"),
         "--out", str(out), *MICRO, *FORMATS, "--threads", "1", "--no-progress", *engine]
    )  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_same_as_track(out: Path, reference: Path, names: tuple[str, ...] = CLIPS) -> None:
    for name in names:
        expected = _files(reference / name)
        assert expected and _files(out / name) == expected, name


def _rows(out: Path) -> list[dict]:
    """The manifest's rows, less the torn line the resume test plants."""
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    return [json.loads(line) for line in lines if not line.startswith('{"video": "torn')]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_engine_two_actors(inputs: Path, reference: Path, ray_cluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ray_engine = ["--engine", "ray", "--pool-size", "2", "--num-cpus", "1"]
    assert _track_many(inputs, out, *ray_engine) == EXIT_FAILURE  # the corrupt file
    rows = {Path(r["video"]).stem: r for r in _rows(out)}
    assert set(rows) == {*CLIPS, "corrupt"}
    assert rows["corrupt"]["status"] == "failed"
    assert "VideoInputError" in rows["corrupt"]["error"]
    assert not (out / "corrupt").exists()
    for name in CLIPS:
        assert rows[name]["status"] == "done" and rows[name]["error"] is None
        assert rows[name]["frames"] == FRAMES and rows[name]["objects"] == 2
        assert rows[name]["seconds"] > 0 and rows[name]["worker"]
    assert len({r["worker"] for r in rows.values()}) <= 2  # the pool's two actors
    _assert_same_as_track(out, reference)

    # A rerun skips the complete videos and tries the failed one again.
    assert _track_many(inputs, out, *ray_engine) == EXIT_FAILURE
    again = _rows(out)[len(rows) :]
    assert [Path(r["video"]).stem for r in again] == ["corrupt"]


def _busy_actor_pids() -> list[int]:
    """Processes of this test's Ray cluster running a TrackActor batch (their title)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::MapWorker(MapBatches(TrackActor)).submit"):
                pids.append(int(entry.name))
    return pids


def test_ray_retries_a_worker_that_dies(inputs: Path, reference: Path, ray_cluster, tmp_path):
    """SIGKILL the only actor in the middle of a video: Ray restarts it and retries the
    video; every video is done and every output is still equal to `track`'s."""
    out = tmp_path / "out"
    job = TrackJob(
        plan=plan_track(formats=["coco", "sav", "png"], has_prompts=True),
        prompts_dir=inputs / "prompts",
        model="sam2.1_micro",
        checkpoint=MICRO_CHECKPOINT,
        threads=1,
    )
    videos = [inputs / "videos" / f"{name}.mp4" for name in CLIPS]
    report: dict = {}

    def run() -> None:
        report["report"] = run_track_many(
            videos, out=out, job=job, engine="ray", progress=False,
            ray_options={"pool_size": 1, "max_retries": 2},
        )  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        busy = _busy_actor_pids()
        if busy and list(out.glob(f"*{PARTIAL_MARK}*")):  # mid-video
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.02)
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert killed is not None, "never saw the actor in the middle of a video"
    rows = report["report"].rows
    assert sorted(Path(r.video).stem for r in rows) == sorted(CLIPS)
    assert all(r.status == "done" for r in rows), rows
    # Every row comes from a live actor: the killed one finished nothing, its video was
    # retried on the restarted actor.
    assert not any(r.worker.endswith(f":{killed} cpu") for r in rows), (killed, rows)
    _assert_same_as_track(out, reference)


def test_resume_after_interrupted_run(inputs: Path, reference: Path, tmp_path: Path) -> None:
    """State of a run killed while tracking `charlie`: `alpha` and `bravo` done (in the
    manifest), `charlie` half-written (a partial folder, no row), `delta` not started, and
    `bravo`'s row lost with the kill although its folder was renamed into place."""
    out = tmp_path / "out"
    done = ("alpha", "bravo")
    for name in done:
        shutil.copytree(reference / name, out / name)
    manifest = Manifest(out / MANIFEST_NAME)

    videos = inputs / "videos"
    manifest.append(
        ManifestRow(video=str(videos / "alpha.mp4"), output=str(out / "alpha"), status="done")
    )
    (out / MANIFEST_NAME).write_text((out / MANIFEST_NAME).read_text() + '{"video": "torn')
    partial = out / f"charlie{PARTIAL_MARK}0123abcd"
    shutil.copytree(reference / "charlie", partial)
    (partial / "charlie_coco.json").write_text("{")  # cut off mid-write
    alpha_before = _files(out / "alpha")
    alpha_mtime = (out / "alpha" / "alpha_coco.json").stat().st_mtime_ns

    assert _track_many(inputs, out, "--engine", "local", "--device", "cpu") == EXIT_FAILURE
    new = [Path(r["video"]).stem for r in _rows(out)[1:]]
    assert sorted(new) == ["bravo", "charlie", "corrupt", "delta"]  # alpha skipped
    assert (out / "alpha" / "alpha_coco.json").stat().st_mtime_ns == alpha_mtime
    assert _files(out / "alpha") == alpha_before
    assert not list(out.glob(f"*{PARTIAL_MARK}*"))
    _assert_same_as_track(out, reference)

    # Nothing left but the corrupt file.
    assert _track_many(inputs, out, "--engine", "local", "--device", "cpu") == EXIT_FAILURE
    assert [Path(r["video"]).stem for r in _rows(out)[1 + len(new) :]] == ["corrupt"]


def test_collect_videos_and_names(inputs: Path, tmp_path: Path) -> None:
    videos = inputs / "videos"
    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips\n{videos / 'alpha.mp4'}\n\n{videos / 'bravo.mp4'}\n")
    found = collect_videos([str(videos / "c*.mp4"), str(videos)], [listing])
    assert [p.name for p in found] == [
        "charlie.mp4", "corrupt.mp4", "alpha.mp4", "bravo.mp4", "delta.mp4",
    ]  # fmt: skip
    same_stem = [tmp_path / "a" / "x.mp4", tmp_path / "b" / "x.mp4", tmp_path / "y.mp4"]
    names = output_names(same_stem)
    assert names[same_stem[2]] == "y"
    assert len({names[same_stem[0]], names[same_stem[1]]}) == 2
    assert all(names[p].startswith("x-") for p in same_stem[:2])
    with pytest.raises(ValueError, match="no video"):
        collect_videos([str(tmp_path / "*.nothing")])
