"""Videos per hour of `track-many --engine ray` with 1 and with 2 actors on a local Ray cluster.

Makes `--videos` clips of `--frames` frames from tests/data/bedroom.mp4, a prompts file each,
then runs `streamer.batch.track_many.run_track_many` once per pool size into a fresh folder,
timing the whole run (actor start-up included: that is what a user waits for). Example:

    python bench/bench_track_many.py --config sam2.1_micro --videos 8 --frames 24 \
        --pools 1 2 --json bench/results/2026-12-01/track_many_micro.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import torch
from common import MICRO_CHECKPOINT, REPO, machine_info

from streamer.batch.track import plan_track
from streamer.batch.track_many import collect_videos, run_track_many
from streamer.batch.video_worker import TrackJob


def make_inputs(root: Path, videos: int, frames: int, size: tuple[int, int]) -> None:
    (root / "videos").mkdir()
    (root / "prompts").mkdir()
    width, height = size
    for number in range(videos):
        path = root / "videos" / f"clip{number:03d}.mp4"
        with av.open(str(REPO / "tests/data/bedroom.mp4")) as src, av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i, decoded in enumerate(src.decode(video=0)):
                if i == frames:
                    break
                frame = decoded.reformat(width=width, height=height, format="yuv420p")
                frame.pts, frame.time_base = i, Fraction(1, 30)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        box = [width * 0.1, height * 0.1, width * 0.6, height * 0.8]
        prompts = {"prompts": [{"frame": 0, "obj_id": 1, "box": box}]}
        (root / "prompts" / f"{path.stem}.json").write_text(json.dumps(prompts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 180), metavar=("W", "H"))
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    checkpoint = args.checkpoint or (MICRO_CHECKPOINT if args.config == "sam2.1_micro" else None)

    import ray

    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_track_many_") as tmp:
        root = Path(tmp)
        make_inputs(root, args.videos, args.frames, tuple(args.size))
        videos = collect_videos([str(root / "videos")])
        job = TrackJob(
            plan=plan_track(formats=["coco"], has_prompts=True),
            prompts_dir=root / "prompts",
            model=args.config,
            checkpoint=checkpoint,
            threads=args.threads,
        )
        for pool in args.pools:
            load_before = os.getloadavg()[0]
            started = time.monotonic()
            report = run_track_many(
                videos,
                out=root / f"out_pool{pool}",
                job=job,
                engine="ray",
                progress=False,
                ray_options={"pool_size": pool, "num_cpus": 1},
            )
            seconds = time.monotonic() - started
            failed = len(report.failed)
            row = {
                "actors": pool,
                "videos": len(report.rows),
                "failed": failed,
                "frames": sum(r.frames for r in report.rows),
                "seconds": round(seconds, 2),
                "videos_per_hour": round(3600 * len(report.rows) / seconds, 1),
                "workers": sorted({r.worker for r in report.rows}),
                "load_avg_1_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
            results.append(row)
            print(
                f"{pool} actor(s): {row['videos']} videos ({row['frames']} frames, "
                f"{failed} failed) in {seconds:.1f} s = {row['videos_per_hour']} videos/hour"
            )
    ray.shutdown()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine_info(torch.device("cpu")),
            "results": results,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
