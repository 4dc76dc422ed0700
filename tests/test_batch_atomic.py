"""Issue 19: `track` outputs are atomic (partial folder, renamed on success; a rerun never
mixes stale and new frames; disk errors name the file) and `track-many` reads past corrupt
manifest rows (micro model on CPU, a 4-frame 64x48 clip)."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
from media_bombs import write_h264

from streamer.batch.manifest import Manifest, ManifestRow, is_complete
from streamer.batch.outputs.coco import CocoWriter
from streamer.batch.staging import PARTIAL_MARK, OutputWriteError
from streamer.batch.track import plan_track, track_with_model


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_h264(tmp_path / "clip.mp4", 64, 48, frames=4)


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"prompts": [{"frame": 0, "obj_id": 1, "box": [4, 4, 30, 40]}]}))
    return path


def _track(model, clip: Path, out: Path, prompts: Path):
    plan = plan_track(formats=["coco", "png"], has_prompts=True)
    return track_with_model(model, clip, out_dir=out, plan=plan, prompts=prompts, progress=False)


def test_a_rerun_replaces_stale_outputs_whole(micro_model, clip, prompts, tmp_path):
    out = tmp_path / "out"
    stale = out / "clip_png"
    stale.mkdir(parents=True)
    for i in range(10):  # a longer earlier run
        (stale / f"{i:05d}.png").write_bytes(b"stale")
    (out / "clip_coco.json").write_text("{")  # a killed run's torn file
    (out / "unrelated.txt").write_text("keep me")
    summary = _track(micro_model, clip, out, prompts)
    assert summary.frames == 4
    assert sorted(p.name for p in stale.iterdir()) == [
        "00000.png", "00001.png", "00002.png", "00003.png", "objects.json"
    ]  # fmt: skip
    assert len(json.loads((out / "clip_coco.json").read_text())["images"]) == 4
    assert (out / "unrelated.txt").read_text() == "keep me"
    assert not list(out.glob(f".*{PARTIAL_MARK}*"))
    assert sorted(summary.outputs) == [out / "clip_coco.json", out / "clip_png"]


def test_a_failed_run_leaves_nothing_under_final_names_and_names_the_file(
    micro_model, clip, prompts, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    written = []

    def full_disk(self, frame, result, *, edited=()):
        written.append(result.frame_idx)
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CocoWriter, "write", full_disk)
    with pytest.raises(OutputWriteError) as caught:
        _track(micro_model, clip, out, prompts)
    assert caught.value.errno == errno.ENOSPC
    assert "clip_coco.json" in str(caught.value) and "No space left" in str(caught.value)
    assert list(out.iterdir()) == [], "no output, not even the partial folder, is left"


@pytest.mark.parametrize(
    "corrupt", [b"[1, 2]", b"null", b"42", b"\xff\xfe not utf-8", b'{"video": 5}', b'"x"']
)
def test_corrupt_manifest_rows_are_skipped_with_a_warning(corrupt, tmp_path, caplog):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "b").mkdir()
    manifest = Manifest(out / "manifest.jsonl")
    done_a = ManifestRow(video="/v/a.mp4", output=str(out / "a"), status="done")
    done_b = ManifestRow(video="/v/b.mp4", output=str(out / "b"), status="done")
    manifest.path.write_bytes(
        done_a.to_json().encode() + b"\n" + corrupt + b"\n" + done_b.to_json().encode() + b"\n"
    )
    with caplog.at_level(logging.WARNING, logger="streamer.batch.manifest"):
        rows = manifest.read()
    assert set(rows) == {"/v/a.mp4", "/v/b.mp4"} and all(map(is_complete, rows.values()))
    assert "manifest.jsonl:2: unreadable manifest row ignored" in caplog.text
    manifest.append(ManifestRow(video="/v/c.mp4", output=str(out / "c"), status="failed"))
    assert set(manifest.read()) == {"/v/a.mp4", "/v/b.mp4", "/v/c.mp4"}


def test_a_video_whose_row_is_corrupt_is_redone(tmp_path):
    from streamer.batch.track_many import plan_items

    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for video in videos:
        video.write_bytes(b"")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "b").mkdir()
    manifest = Manifest(out / "manifest.jsonl")
    good = ManifestRow(video=str(videos[0]), output=str(out / "a"), status="done")
    # b's row was overwritten with garbage: b is redone, a is skipped.
    manifest.path.write_bytes(good.to_json().encode() + b"\n\xff" + str(videos[1]).encode())
    items, skipped = plan_items(videos, out, manifest)
    assert skipped == 1 and [Path(item.video).name for item in items] == ["b.mp4"]
