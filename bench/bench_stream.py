"""Streaming benchmark: frames/s and latency vs object count, memory over a long stream,
compile warm-up and eager vs compiled speed.

Sections (`--sections`, default all three):
  latency  frames/s and per-frame latency p50/p95 for 1, 4, 16, 64 objects, with the cost
           of each component per frame and the cost ratio to one object. Sessions for all
           object counts run side by side, one frame each in turn, so a busy machine's load
           swings hit every count alike.
  memory   process RSS, live tensors and the bytes held by the session's memories, sampled
           along a long stream (bounded memory: these must plateau).
  compile  `compile_model` + static shapes: warm-up (compile) time, then frames/s compiled vs
           eager, and recompiles in steady state (must be 0).

Objects are coloured boxes of a synthetic scene (`common.moving_boxes`), prompted with their
masks on frame 0. Examples (from the repository root):

  python bench/bench_stream.py --config sam2.1_micro --json out/stream_micro.json
  python bench/bench_stream.py --config sam2.1_hiera_t --sections latency --objects 1 16 \
      --warmup 1 --frames 2 --static-shapes --max-conditioning-frames 1
  python bench/bench_stream.py --config sam2.1_micro --sections latency --objects 1 16 --compiled
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import warnings
from collections import defaultdict
from typing import Any

import torch
from common import (
    box_masks,
    load_model,
    machine_info,
    moving_boxes,
    print_table,
    rss_mib,
    stats_ms,
    synchronize,
    timed,
    write_json,
)

from sam2_video import SessionOptions, StreamingSession
from sam2_video.compile import compile_model
from sam2_video.modeling.sam2 import SAM2Model

COMPONENTS = (
    "image_encoder",
    "memory_attention",
    "sam_prompt_encoder",
    "sam_mask_decoder",
    "memory_encoder",
)


class ComponentTimer:
    """Wall time spent in each component's forward (forward hooks; works compiled too)."""

    def __init__(self, model: SAM2Model, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        self._handles = []
        for name in COMPONENTS:
            module = getattr(model, name)
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name: str):
        def hook(module, args) -> None:
            synchronize(self.device)
            self._start[name] = time.perf_counter()

        return hook

    def _post(self, name: str):
        def hook(module, args, output) -> None:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - self._start.pop(name)

        return hook

    def take(self) -> dict[str, float]:
        """Seconds per component since the last call."""
        out = {name: self.seconds.get(name, 0.0) for name in COMPONENTS}
        self.seconds.clear()
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _seeded_session(
    model: SAM2Model, num_objects: int, args: argparse.Namespace, static_shapes: bool
) -> StreamingSession:
    height, width = args.frame_size
    options = SessionOptions(
        max_objects=max(num_objects, 1),
        max_conditioning_frames=args.max_conditioning_frames,
        static_shapes=static_shapes,
        lost_after=None,
    )
    session = StreamingSession(model, options)
    session.add_frame(moving_boxes(0, num_objects, height, width))
    for mask in box_masks(num_objects, height, width):
        session.add_mask(None, mask)
    return session


# ---------------------------------------------------------------------------------- latency
def bench_latency(model: SAM2Model, device: torch.device, args: argparse.Namespace) -> dict:
    height, width = args.frame_size
    sessions = {n: _seeded_session(model, n, args, args.static_shapes) for n in args.objects}
    for t in range(1, args.warmup + 1):
        for n, session in sessions.items():
            session.add_frame(moving_boxes(t, n, height, width))
    timer = ComponentTimer(model, device)
    times: dict[int, list[float]] = defaultdict(list)
    cpu_times: dict[int, list[float]] = defaultdict(list)
    parts: dict[int, dict[str, float]] = {n: defaultdict(float) for n in args.objects}
    try:
        for t in range(args.warmup + 1, args.warmup + 1 + args.frames):
            for n, session in sessions.items():  # round robin: load swings hit every count
                frame = moving_boxes(t, n, height, width)
                timer.take()
                _, seconds, cpu_seconds = timed(device, session.add_frame, frame)
                times[n].append(seconds)
                cpu_times[n].append(cpu_seconds)
                for name, s in timer.take().items():
                    parts[n][name] += s
    finally:
        timer.remove()
    rows = []
    base = None
    for n in args.objects:
        row: dict[str, Any] = {"objects": n, **stats_ms(times[n])}
        row["fps"] = round(1000.0 / row["mean_ms"], 2)
        row["cpu"] = stats_ms(cpu_times[n])
        per_frame = {name: 1000.0 * s / args.frames for name, s in parts[n].items()}
        row["components_ms"] = {k: round(v, 2) for k, v in per_frame.items()}
        row["other_ms"] = round(row["mean_ms"] - sum(per_frame.values()), 2)
        if base is None:
            base = row
        row["ratio_p50_vs_first"] = round(row["p50_ms"] / base["p50_ms"], 2)
        row["ratio_mean_vs_first"] = round(row["mean_ms"] / base["mean_ms"], 2)
        row["ratio_cpu_p50_vs_first"] = round(row["cpu"]["p50_ms"] / base["cpu"]["p50_ms"], 2)
        rows.append(row)
    print(
        f"\nlatency ({args.config}, {device}, frame {width}x{height}, "
        f"static_shapes={args.static_shapes}, {args.frames} timed frames per count)"
    )
    table = [
        {
            **{k: r[k] for k in ("objects", "fps", "p50_ms", "p95_ms", "mean_ms")},
            "x_first(p50)": r["ratio_p50_vs_first"],
            "cpu_p50": r["cpu"]["p50_ms"],
            "x_first(cpu)": r["ratio_cpu_p50_vs_first"],
            "img_enc": r["components_ms"]["image_encoder"],
            "mem_attn": r["components_ms"]["memory_attention"],
            "decoder": r["components_ms"]["sam_mask_decoder"],
            "mem_enc": r["components_ms"]["memory_encoder"],
            "other": r["other_ms"],
        }
        for r in rows
    ]
    print_table(table, list(table[0]))
    return {"frame_size": [height, width], "static_shapes": args.static_shapes, "rows": rows}


# ---------------------------------------------------------------------------------- memory
def _session_bytes(session: StreamingSession) -> tuple[int, int]:
    """(bytes of tensors held in the session's object memories, frames remembered)."""
    total, frames = 0, 0
    for obj in session.objects.values():
        outputs = list(obj.tracked.values()) + list(obj.conditioning.values())
        frames += len(outputs)
        for out in outputs:
            for tensor in (
                out.low_res_logits,
                out.obj_ptr,
                out.object_score,
                out.maskmem,
                out.ious,
            ):
                if tensor is not None:
                    total += tensor.numel() * tensor.element_size()
    return total, frames


def _live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance on some lazy torch modules warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def bench_memory(model: SAM2Model, device: torch.device, args: argparse.Namespace) -> dict:
    height, width = args.frame_size
    n = args.long_objects
    session = _seeded_session(model, n, args, args.static_shapes)
    samples = []
    start = time.perf_counter()
    for t in range(1, args.long_frames + 1):
        session.add_frame(moving_boxes(t, n, height, width))
        if t == 1 or t % args.sample_every == 0 or t == args.long_frames:
            gc.collect()
            held, frames = _session_bytes(session)
            sample = {
                "frame": t,
                "elapsed_s": round(time.perf_counter() - start, 1),
                "rss_mib": round(rss_mib(), 1),
                "live_tensors": _live_tensors(),
                "session_mib": round(held / 2**20, 3),
                "frames_held": frames,
            }
            if device.type == "cuda":
                sample["cuda_allocated_mib"] = round(torch.cuda.memory_allocated(device) / 2**20, 1)
            samples.append(sample)
    print(f"\nmemory over {args.long_frames} frames ({args.config}, {n} objects, {device})")
    print_table(samples, list(samples[0]))
    # Memory fills during the first frames (retention window); compare from mid-stream on.
    start_frame = min(100, args.long_frames // 2)
    after_warmup = [s for s in samples if s["frame"] >= start_frame]
    growth = after_warmup[-1]["rss_mib"] - after_warmup[0]["rss_mib"]
    print(f"RSS growth from frame {after_warmup[0]['frame']} to the end: {growth:+.1f} MiB")
    return {
        "objects": n,
        "frames": args.long_frames,
        "samples": samples,
        "rss_growth_after_warmup_mib": round(growth, 1),
    }


# ---------------------------------------------------------------------------------- compile
def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def bench_compile(device: torch.device, args: argparse.Namespace) -> dict:
    """Compiled (static shapes) vs eager, each object count in its own session."""
    height, width = args.frame_size
    eager_model, _ = load_model(args.config, args.checkpoint, device)
    model, _ = load_model(args.config, args.checkpoint, device)
    start = time.perf_counter()
    parts = compile_model(model)
    rows = []
    for n in args.compile_objects:
        compiled = _seeded_session(model, n, args, static_shapes=True)  # prompts compile here
        first_frames = []
        for t in range(1, args.compile_warmup + 1):
            frame = moving_boxes(t, n, height, width)
            _, seconds, _ = timed(device, compiled.add_frame, frame)
            first_frames.append(round(seconds, 2))
        warm_s = time.perf_counter() - start  # includes earlier counts' compiles
        graphs = _unique_graphs()
        eager = _seeded_session(eager_model, n, args, static_shapes=False)
        eager_static = _seeded_session(eager_model, n, args, static_shapes=True)
        for t in range(1, args.compile_warmup + 1):
            eager.add_frame(moving_boxes(t, n, height, width))
            eager_static.add_frame(moving_boxes(t, n, height, width))
        times: dict[str, list[float]] = defaultdict(list)
        for t in range(args.compile_warmup + 1, args.compile_warmup + 1 + args.frames):
            frame = moving_boxes(t, n, height, width)
            for name, session in (
                ("compiled", compiled),
                ("eager", eager),
                ("eager_static", eager_static),
            ):
                _, seconds, cpu_seconds = timed(device, session.add_frame, frame)
                times[name].append(seconds)
                times[f"{name}_cpu"].append(cpu_seconds)
        row: dict[str, Any] = {
            "objects": n,
            "warmup_frames_s": first_frames,
            "cumulative_compile_s": round(warm_s, 1),
            "steady_recompiles": _unique_graphs() - graphs,
        }
        for name, values in times.items():
            row[name] = stats_ms(values)
            if not name.endswith("_cpu"):
                row[f"{name}_fps"] = round(1000.0 / row[name]["mean_ms"], 2)
        row["speedup_p50"] = round(row["eager"]["p50_ms"] / row["compiled"]["p50_ms"], 2)
        row["speedup_cpu_p50"] = round(
            row["eager_cpu"]["p50_ms"] / row["compiled_cpu"]["p50_ms"], 2
        )
        rows.append(row)
        start = time.perf_counter()
    print(f"\ncompile ({args.config}, {device}, mode={parts.mode}, fallbacks={parts.fallbacks()})")
    table = [
        {
            "objects": r["objects"],
            "warm-up s (incl. compile)": r["cumulative_compile_s"],
            "first frames s": r["warmup_frames_s"],
            "compiled p50": r["compiled"]["p50_ms"],
            "eager p50": r["eager"]["p50_ms"],
            "eager+static p50": r["eager_static"]["p50_ms"],
            "speedup": r["speedup_p50"],
            "compiled cpu p50": r["compiled_cpu"]["p50_ms"],
            "eager cpu p50": r["eager_cpu"]["p50_ms"],
            "speedup (cpu)": r["speedup_cpu_p50"],
            "recompiles": r["steady_recompiles"],
        }
        for r in rows
    ]
    print_table(table, list(table[0]))
    return {"mode": parts.mode, "fallbacks": parts.fallbacks(), "rows": rows}


# ---------------------------------------------------------------------------------- main
def _frame_size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--checkpoint", default=None, help="default: micro fixture / random")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--sections", default="latency,memory,compile")
    parser.add_argument("--frame-size", type=_frame_size, default=(480, 640), help="HxW")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--warmup", type=int, default=16, help="frames before timing")
    parser.add_argument("--frames", type=int, default=30, help="timed frames per setting")
    parser.add_argument("--static-shapes", action="store_true", help="latency/memory sections")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help=(
            "latency/memory sections on the compiled model (vos_optimized; implies --static-shapes)"
        ),
    )
    parser.add_argument("--max-conditioning-frames", type=int, default=4)
    parser.add_argument("--long-frames", type=int, default=10_000)
    parser.add_argument("--long-objects", type=int, default=2)
    parser.add_argument("--sample-every", type=int, default=1000)
    parser.add_argument("--compile-objects", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--compile-warmup", type=int, default=3, help="frames after prompts")
    parser.add_argument(
        "--inductor-cache",
        default="fresh",
        help="'fresh' (a new empty cache: cold compile), 'default', or a dir",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    if args.inductor_cache == "fresh":
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_bench_")
    elif args.inductor_cache != "default":
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.inductor_cache
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    results: dict[str, Any] = {
        "config": args.config,
        "args": vars(args) | {"frame_size": list(args.frame_size)},
    }
    model, weights = load_model(args.config, args.checkpoint, device)
    results["weights"] = weights
    if args.compiled:
        # The warm-up frames compile every part and batch bucket before timing starts.
        args.static_shapes = True
        compile_model(model)
    results["machine"] = machine_info(device)
    print(f"{args.config} ({weights}) on {device}; machine: {results['machine']}")
    with torch.inference_mode():
        if "latency" in sections:
            results["latency"] = bench_latency(model, device, args)
        if "memory" in sections:
            results["memory"] = bench_memory(model, device, args)
    if "compile" in sections:
        with torch.inference_mode():
            results["compile"] = bench_compile(device, args)
    results["machine_after"] = {"load_avg_1_5_15": machine_info(device)["load_avg_1_5_15"]}
    write_json(args.json, results)


if __name__ == "__main__":
    main()
