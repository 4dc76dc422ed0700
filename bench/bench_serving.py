"""Serving-core benchmark: many sessions through the device schedulers (in process).

Sections (`--sections`):
  aggregate  frames/s over all sessions and per-frame latency (decode to result, p50/p95) for
             1, 2, 4, 8 batch-file sessions, with batching off (max_batch 1) and on;
  fairness   a busy session's frame rate alone and while another session loops reset +
             auto_seed, as a fraction of its fair share (half its solo rate);
  placement  sessions spread over two CPU devices: sessions and busy fraction per device.

Sessions read a synthetic clip (moving boxes, `--size`) through real file sources; each gets
`--objects` box prompts on its first frame. Example:

    python bench/bench_serving.py --config sam2.1_micro --json bench/results/serving.json
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import torch
from common import box_masks, load_model, machine_info, moving_boxes, print_table, write_json

from streamer.protocol import AddBox, AutoSeed, Reset
from streamer.sessions import SessionCreate, SessionManager
from streamer.sessions.devices import DeviceSpec
from streamer.settings import Settings


def write_clip(path: Path, frames: int, height: int, width: int, objects: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = moving_boxes(t, max(objects, 1), height, width)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _boxes(objects: int, height: int, width: int) -> list[list[float]]:
    boxes = []
    for mask in box_masks(max(objects, 1), height, width)[:objects]:
        ys, xs = np.nonzero(mask)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())])
    return boxes


def _wait(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark wait timed out")
        time.sleep(0.01)


def start_sessions(manager, clip: Path, count: int, objects: int, hw, *, paced=False) -> list:
    sessions = []
    for _ in range(count):
        session = manager.create(SessionCreate(source=str(clip), start="now", paced=paced))
        sessions.append(session)
    for session in sessions:
        _wait(lambda s=session: s.view.frame_idx >= 0)
        for box in _boxes(objects, *hw):
            session.submit(AddBox(type="add_box", box=box)).result(120)
    return sessions


def aggregate(models, clip, args, hw) -> list[dict]:
    rows = []
    for max_batch in sorted({1, args.max_batch}):
        for count in args.sessions:
            settings = Settings(
                max_sessions=max(count, 8),
                max_batch=max_batch,
                max_objects_per_session=max(args.objects, 1),
                vos_optimized=getattr(args, "vos_optimized", False),
            )
            manager = SessionManager(models=models, settings=settings)
            manager.start()
            latencies: list[float] = []
            try:
                sessions = start_sessions(manager, clip, count, args.objects, hw)
                for session in sessions:
                    session.add_result_listener(
                        lambda frame, result: latencies.append(time.time() - frame.capture_time)
                    )
                time.sleep(args.warmup)
                latencies.clear()
                before = sum(s.processed for s in sessions)
                t0 = time.monotonic()
                time.sleep(args.seconds)
                frames = sum(s.processed for s in sessions) - before
                elapsed = time.monotonic() - t0
                sizes = dict(next(iter(manager.schedulers.values())).batch_sizes)
            finally:
                manager.shutdown()
            lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
            rows.append(
                {
                    "max_batch": max_batch,
                    "sessions": count,
                    "objects": args.objects,
                    "aggregate_fps": round(frames / elapsed, 2),
                    "per_session_fps": round(frames / elapsed / count, 2),
                    "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
                    "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
                    "mean_batch": round(
                        sum(k * v for k, v in sizes.items()) / max(sum(sizes.values()), 1), 2
                    ),
                }
            )
            print_table(rows[-1:], list(rows[-1]))
    return rows


def fairness(models, clip, args, hw) -> dict:
    settings = Settings(
        auto_seed_points_per_side=args.seed_points,
        expensive_commands_per_minute=1e6,
        expensive_commands_burst=10**6,
    )
    manager = SessionManager(models=models, settings=settings)
    manager.start()
    stop = threading.Event()
    seeds = [0]
    try:
        (busy,) = start_sessions(manager, clip, 1, args.objects, hw)
        time.sleep(args.warmup)

        def rate(seconds: float) -> float:
            start, t0 = busy.processed, time.monotonic()
            time.sleep(seconds)
            return (busy.processed - start) / (time.monotonic() - t0)

        solo = rate(args.seconds)
        (abuser,) = start_sessions(manager, clip, 1, 0, hw, paced=True)

        def abuse() -> None:
            while not stop.is_set():
                abuser.submit(Reset(type="reset")).result(120)
                seen = abuser.view.frame_idx
                _wait(lambda: abuser.view.frame_idx != seen or stop.is_set())
                reply = abuser.submit(AutoSeed(type="auto_seed")).result(120)
                seeds[0] += reply.type == "ack"

        thread = threading.Thread(target=abuse, daemon=True)
        thread.start()
        _wait(lambda: seeds[0] >= 1)
        shared = rate(2 * args.seconds)
    finally:
        stop.set()
        manager.shutdown()
    row = {
        "solo_fps": round(solo, 2),
        "with_abuser_fps": round(shared, 2),
        "fair_share_fraction": round(shared / (solo / 2), 3),
        "auto_seeds_done": seeds[0],
        "seed_points_per_side": args.seed_points,
    }
    print_table([row], list(row))
    return row


def placement(model, clip, args, hw) -> dict:
    models = {DeviceSpec("cpu:0", "cpu"): model, DeviceSpec("cpu:1", "cpu"): copy.deepcopy(model)}
    manager = SessionManager(models=models, settings=Settings(max_sessions=16))
    manager.start()
    try:
        sessions = start_sessions(
            manager, clip, args.placement_sessions, args.objects, hw, paced=True
        )
        time.sleep(args.seconds)
        per_device = {}
        for label, scheduler in manager.schedulers.items():
            mine = [s for s in sessions if s.device == label]
            per_device[label] = {
                "sessions": len(mine),
                "busy_fraction": round(
                    scheduler.busy_seconds / (time.monotonic() - scheduler.started_at), 3
                ),
                "frames": scheduler.frames_processed,
            }
    finally:
        manager.shutdown()
    print(per_device)
    return per_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sections", nargs="+", default=["aggregate", "fairness", "placement"])
    parser.add_argument("--sessions", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--max-batch", type=int, default=8, help="the batching-on setting")
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=3000, help="clip length")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed-points", type=int, default=16)
    parser.add_argument("--placement-sessions", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    model, checkpoint = load_model(args.config, args.checkpoint, device)
    hw = tuple(args.size)
    results = {"machine": machine_info(device), "args": vars(args), "checkpoint": checkpoint}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, args.frames, *hw, args.objects)
        models = {DeviceSpec(f"{device.type}:0", str(device)): model}
        if "aggregate" in args.sections:
            results["aggregate"] = aggregate(models, clip, args, hw)
        if "fairness" in args.sections:
            results["fairness"] = fairness(models, clip, args, hw)
        if "placement" in args.sections and device.type == "cpu":
            results["placement"] = placement(model, clip, args, hw)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
