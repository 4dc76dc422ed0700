"""Threads or processes for several device replicas: the same work both ways, in one run.

Each replica tracks `--objects` objects through `--frames` frames of a synthetic stream, one
torch thread each (as a CPU scheduler runs). "threads" runs the replicas on threads of one
process (how `serve --devices` runs them); "processes" runs each in its own process. Equal
aggregate frames/s means the GIL costs nothing here: the model's kernels release it. Rounds
alternate between the two so that load changes hit both alike.

    python bench/bench_devices.py --replicas 2 --rounds 3 --json bench/results/devices.json
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import threading
import time

import torch
from common import box_masks, load_model, machine_info, moving_boxes, print_table, write_json

from sam2_video.predictors.streaming import StreamingSession


def track(model, frames: int, objects: int, hw) -> None:
    torch.set_num_threads(1)
    session = StreamingSession(model)
    session.add_frame(moving_boxes(0, max(objects, 1), *hw))
    for mask in box_masks(objects, *hw):
        session.add_mask(None, mask)
    for t in range(1, frames + 1):
        session.add_frame(moving_boxes(t, max(objects, 1), *hw))


def _process_main(config: str, frames: int, objects: int, hw, ready, start, done) -> None:
    model, _ = load_model(config, None, torch.device("cpu"))
    track(model, 2, objects, hw)  # warm-up, as the threads get
    ready.put(True)
    start.wait()
    track(model, frames, objects, hw)
    done.put(time.perf_counter())


def with_threads(models, frames, objects, hw) -> float:
    for model in models:
        track(model, 2, objects, hw)
    threads = [threading.Thread(target=track, args=(m, frames, objects, hw)) for m in models]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(models) * frames / (time.perf_counter() - t0)


def with_processes(config, replicas, frames, objects, hw) -> float:
    ctx = mp.get_context("spawn")
    ready, start, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_process_main, args=(config, frames, objects, hw, ready, start, done))
        for _ in range(replicas)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=600)  # every process loaded and warmed up
    t0 = time.perf_counter()
    start.set()
    ends = [done.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(60)
    return replicas * frames / (max(ends) - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    hw = tuple(args.size)
    model, _ = load_model(args.config, None, torch.device("cpu"))
    models = [model] + [copy.deepcopy(model) for _ in range(args.replicas - 1)]
    rows = []
    for round_index in range(args.rounds):
        threads = with_threads(models, args.frames, args.objects, hw)
        processes = with_processes(args.config, args.replicas, args.frames, args.objects, hw)
        rows.append(
            {
                "round": round_index,
                "threads_fps": round(threads, 2),
                "processes_fps": round(processes, 2),
                "threads_over_processes": round(threads / processes, 3),
            }
        )
        print_table(rows[-1:], list(rows[-1]))
    write_json(
        args.json,
        {"machine": machine_info(torch.device("cpu")), "args": vars(args), "rounds": rows},
    )


if __name__ == "__main__":
    main()
