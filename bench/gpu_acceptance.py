"""GPU acceptance in one command: fidelity, bf16 drift, eager vs compiled, serving, latency, memory.

    python bench/gpu_acceptance.py                      # on a GPU machine (~8 minutes, H100/H200)
    python bench/gpu_acceptance.py --quick --device cpu --config sam2.1_micro   # CI, < 1 minute

Writes `<out>/gpu_acceptance.json` and `<out>/gpu_acceptance.md` (a markdown table to paste
into docs/benchmarks.md) after EVERY section: each runs in its own `try`, so a failing section
is recorded (`errors`) and the others still run and keep their results. `--sections` picks
sections. Needs nothing beyond `pip install -e .` (and, for `official`, SAM2_SRC plus the
wheels of bench/fetch_official_wheels.sh). Sections:
  fidelity   the micro checkpoint on the device against the official reference fixtures
             (every image case, every video scenario), fp32 with TF32 off (cuDNN would use TF32
             for fp32 convolutions by default), with the tests' tolerances;
  bf16       the image cases and video scenarios again in bf16 (precision="bf16"): drift of
             logits and masks against the fp32 references;
  compiled   `--config` (default sam2.1_hiera_t, random weights: the compute is the same) at its
             input size on a real clip, eager vs compiled (vos_optimized) at 1/4/16/64 objects:
             frames/s, compile warm-up time, recompiles after warm-up (must be 0);
  serving    aggregate frames/s of 1/2/4/8 concurrent streams through the scheduler, batching
             off and on (bench_serving.aggregate);
  latency    frame-in to masklet-out p50/p95 through the real service: a uvicorn subprocess, a
             paced file source, a websocket client;
  memory     device memory (CUDA) or RSS (CPU) over a long stream (3,000 frames): flat, and
             the peak;
  official   our vos_optimized vs the official SAM2VideoPredictorVOS on the same device, same
             random weights, clip, clicks and precision (bf16 + TF32 both sides on CUDA), at
             1/4/16 objects: FPS ratio, mask IoU, peak memory (bench/acceptance_official.py).
The markdown ends with the operator figures: streams per device at 30 FPS (from the serving
rows) with their p95 latency, serving compiled and bf16, peak memory, compile warm-up time,
recompiles and fallbacks when batch sizes vary.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from acceptance_report import markdown  # noqa: E402
from acceptance_serving import latency, serving  # noqa: E402
from common import MICRO_CHECKPOINT, REPO, box_masks, machine_info, rss_mib  # noqa: E402

from sam2_video import SessionOptions, StreamingSession  # noqa: E402
from sam2_video.build import build_sam2  # noqa: E402
from sam2_video.predictors.image import SAM2ImagePredictor  # noqa: E402
from sam2_video.predictors.video import SAM2VideoPredictor  # noqa: E402

REFERENCE = REPO / "tests" / "fixtures" / "reference" / "micro"
CLIP = REPO / "tests" / "data" / "bedroom.mp4"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clip_frames(count: int, hw: tuple[int, int] | None = None) -> list[np.ndarray]:
    import cv2

    frames = []
    with av.open(str(CLIP)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(rgb if hw is None else cv2.resize(rgb, hw[::-1]))
            if len(frames) == count:
                break
    while len(frames) < count:  # loop the clip for long runs
        frames += frames[: count - len(frames)]
    return frames


# --- fidelity and bf16 --------------------------------------------------------------------


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """fp32 as fp32: TF32 off for matmuls and cuDNN convolutions (on by default for the latter)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def micro(device: torch.device, precision: str):
    return build_sam2(
        "sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device=str(device), precision=precision
    )


def image_cases(device: torch.device, autocast: bool) -> dict:
    arrays = np.load(REFERENCE / "image.npz")
    meta = json.loads((REFERENCE / "image.json").read_text())
    model = micro(device, "bf16" if autocast else "fp32")
    predictor = SAM2ImagePredictor(model)
    worst_logit, worst_iou, differing = 0.0, 0.0, 0
    with contextlib.nullcontext() if autocast else tf32_off():
        predictor.set_image(arrays["image_uint8"])
        for case in meta["cases"]:
            name = case["name"]
            kwargs = {
                "multimask_output": case["multimask_output"],
                "return_logits": case["return_logits"],
            }
            for key in ("point_coords", "point_labels", "box", "mask_input"):
                if f"{name}__in_{key}" in arrays.files:
                    kwargs[key] = arrays[f"{name}__in_{key}"]
            masks, ious, low_res = predictor.predict(**kwargs)
            worst_logit = max(
                worst_logit, float(np.abs(low_res - arrays[f"{name}__low_res_logits"]).max())
            )
            worst_iou = max(
                worst_iou, float(np.abs(ious - arrays[f"{name}__iou_predictions"]).max())
            )
            bits = np.packbits(np.asarray(masks) > 0, axis=-1)
            differing += (
                int(np.unpackbits(bits ^ arrays[f"{name}__masks_packbits"], axis=-1).sum())
                if f"{name}__masks_packbits" in arrays.files
                else 0
            )
    result = {
        "cases": len(meta["cases"]),
        "max_low_res_logit_diff": worst_logit,
        "max_iou_diff": worst_iou,
        "differing_mask_pixels": differing,
    }
    if not autocast:  # bf16 is a drift measurement, fp32 must meet the tests' tolerances
        result["pass"] = worst_logit <= 1e-3 and worst_iou <= 1e-3
    return result


# Propagation passes of each scenario (prefix of its arrays), as in tests/test_video_predictor.py.
PASSES = {
    "scenario1_single_click": [""],
    "scenario2_click_box_mask": [""],
    "scenario3_two_cond_frames": [""],
    "scenario4_correction_after_tracking": ["p1_", "p2_"],
    "scenario5_forward_reverse": ["fw_", "rv_"],
}


def video_scenarios(device: torch.device, names: list[str], precision: str = "fp32") -> dict:
    with contextlib.nullcontext() if precision != "fp32" else tf32_off():
        return _video_scenarios(device, names, precision)


def _video_scenarios(device: torch.device, names: list[str], precision: str) -> dict:
    frames = np.load(REFERENCE / "video_frames.npz")["frames_resized_uint8"]
    model = micro(device, precision)
    worst_prompt, worst_pass, worst_bits = 0.0, 0.0, 0
    for name in names:
        prefixes = PASSES[name]
        meta = json.loads((REFERENCE / f"video_{name}.json").read_text())
        arrays = np.load(REFERENCE / f"video_{name}.npz")
        pred = SAM2VideoPredictor(model)
        state = pred.init_state(frames, video_hw=tuple(meta["video_hw"]))
        prefixes = list(prefixes)

        def propagate(prefix: str) -> None:
            nonlocal worst_pass, worst_bits
            results = pred.propagate_in_video(state, reverse=prefix == "rv_")
            for i, (frame_idx, _, masks) in enumerate(results):
                bits = np.packbits(masks[:, 0].cpu().numpy() > 0, axis=-1)
                ref = arrays[f"{prefix}video_res_mask_bits"][i]
                worst_bits = max(worst_bits, int(np.unpackbits(bits ^ ref, axis=-1).sum()))
                key = f"{prefix}video_res_logits_frame{frame_idx:02d}"
                if key in arrays.files:
                    diff = np.abs(masks[:, 0].float().cpu().numpy() - arrays[key]).max()
                    worst_pass = max(worst_pass, float(diff))

        for call in meta["calls"]:
            if name.startswith("scenario4") and call["frame_idx"] == 8 and prefixes[0] == "p1_":
                propagate(prefixes.pop(0))  # the correction comes after tracking
            if call["method"] == "add_new_mask":
                _, obj_ids, masks = pred.add_new_mask(
                    state, call["frame_idx"], call["obj_id"], arrays[f"call_{call['tag']}__in_mask"]
                )
            else:
                _, obj_ids, masks = pred.add_new_points_or_box(
                    state,
                    call["frame_idx"],
                    call["obj_id"],
                    points=call.get("points"),
                    labels=call.get("labels"),
                    box=call.get("box"),
                    clear_old_points=call.get("clear_old_points", True),
                )
            ours = masks[obj_ids.index(call["obj_id"]), 0].float().cpu().numpy()
            reference = arrays[f"call_{call['tag']}__video_res_logits_obj"]
            worst_prompt = max(worst_prompt, float(np.abs(ours - reference).max()))
        for prefix in prefixes:
            propagate(prefix)
    # Tolerances of tests/test_video_predictor.py (bf16 memory rounding lets logits drift).
    result = {
        "scenarios": len(names),
        "precision": precision,
        "max_prompt_logit_diff": worst_prompt,
        "max_propagated_logit_diff": worst_pass,
        "max_differing_pixels_per_frame": worst_bits,
    }
    if precision == "fp32":  # other precisions are a drift measurement
        result["pass"] = worst_prompt <= 2e-2 and worst_pass <= 2e-2 and worst_bits <= 8
    return result


# --- eager vs compiled --------------------------------------------------------------------


def _session_with_objects(model, frames, objects: int, static: bool) -> StreamingSession:
    session = StreamingSession(
        model, SessionOptions(max_objects=max(objects, 1), static_shapes=static)
    )
    session.add_frame(frames[0])
    h, w = frames[0].shape[:2]
    for mask in box_masks(objects, h, w):
        session.add_mask(None, mask)
    return session


def time_stream(model, frames, objects, device, static, warmup) -> tuple[float, float, int]:
    """(frames/s after warm-up, warm-up seconds, graphs compiled after the warm-up)."""
    from torch._dynamo.utils import counters

    session = _session_with_objects(model, frames, objects, static)
    t0 = time.perf_counter()
    for frame in frames[1 : 1 + warmup]:
        session.add_frame(frame)
    sync(device)
    warm = time.perf_counter() - t0
    graphs = counters["stats"]["unique_graphs"]
    timed = frames[1 + warmup :]
    t0 = time.perf_counter()
    for frame in timed:
        session.add_frame(frame)
    sync(device)
    fps = len(timed) / (time.perf_counter() - t0)
    return fps, warm, counters["stats"]["unique_graphs"] - graphs


def compiled_vs_eager(args, device) -> list[dict]:
    from sam2_video.compile import compile_model
    from sam2_video.tracking.tracker import StaticShapes
    from sam2_video.warmup import warm_up

    eager = build_sam2(args.config, device=str(device))
    compiled = copy.deepcopy(eager)
    buckets = StaticShapes().buckets_up_to(max(args.objects))
    parts = compile_model(compiled, backend=args.backend, buckets=buckets)
    # Every bucket compiled ahead, as the service does before /readyz: the timed runs below
    # must then compile nothing, whatever their object count.
    report = warm_up(compiled, max_objects=max(args.objects), time_budget=args.warmup_budget)
    size = eager.image_size
    frames = clip_frames(1 + args.warmup + args.frames, None if args.quick else (540, 960))
    rows = []
    for objects in args.objects:
        eager_fps, _, _ = time_stream(eager, frames, objects, device, False, args.warmup)
        compiled_fps, warm, recompiles = time_stream(
            compiled, frames, objects, device, True, args.warmup
        )
        rows.append(
            {
                "objects": objects,
                "input_size": size,
                "eager_fps": round(eager_fps, 2),
                "compiled_fps": round(compiled_fps, 2),
                "speedup": round(compiled_fps / eager_fps, 3),
                "compile_warmup_s": round(report.seconds, 1),
                "warmup_complete": report.complete,
                "first_frames_s": round(warm, 2),
                "recompiles_after_warmup": recompiles,
                "fallbacks": sorted(parts.fallbacks()),
            }
        )
        print(rows[-1], flush=True)
    return rows


# --- memory ----------------------------------------------------------------------------


def memory(args, device) -> dict:
    model = build_sam2(args.config, device=str(device))
    frames = clip_frames(60, (270, 480))
    session = _session_with_objects(model, frames, 4, False)
    samples = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.memory_frames):
        session.add_frame(frames[i % len(frames)])
        if i % max(args.memory_frames // 10, 1) == 0:
            sync(device)
            used = (
                torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib()
            )
            samples.append(round(used, 1))
    later = samples[len(samples) // 2 :]
    return {
        "frames": args.memory_frames,
        "unit": "MiB allocated" if device.type == "cuda" else "MiB RSS",
        "samples": samples,
        "growth_second_half": round(max(later) - min(later), 1),
        "peak": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda"
        else max(samples),
    }


class SectionSkipped(Exception):
    """A section that cannot run here (e.g. `official` without SAM2_SRC): noted, not an error."""


SECTIONS = ("fidelity", "bf16", "compiled", "serving", "latency", "memory", "official")


def section_runners(args, device, tmp: Path) -> dict[str, Callable[[], dict]]:
    """Section name -> a function returning {result key: value} (run in its own try)."""
    quick = args.quick
    names = ["scenario1_single_click"] if quick else list(PASSES)

    def official() -> dict:
        from official import OfficialUnavailable

        try:
            from acceptance_official import official_section

            return {"official": official_section(args, device, tmp, CLIP)}
        except OfficialUnavailable as exc:
            raise SectionSkipped(str(exc)) from exc

    def serving_rows() -> dict:
        rows = {"serving": serving(args, device)}
        if not quick:  # the vos_optimized service, compiled and warmed up
            rows["serving_compiled"] = serving(args, device, compiled=True)
        return rows

    return {
        # --quick replays one scenario (the test suite replays all of them on the CPU).
        "fidelity": lambda: {
            "fidelity_image": image_cases(device, autocast=False),
            "fidelity_video": video_scenarios(device, names),
        },
        "bf16": lambda: {
            "bf16": image_cases(device, autocast=True),
            "bf16_video": video_scenarios(device, names, precision="bf16"),
        },
        "compiled": lambda: {"compiled": compiled_vs_eager(args, device)},
        "serving": serving_rows,
        "latency": lambda: {"latency": latency(args, device, tmp)},
        "memory": lambda: {"memory": memory(args, device)},
        "official": official,
    }


def write(out: Path, results: dict) -> None:
    (out / "gpu_acceptance.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "gpu_acceptance.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (CI on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--out", default="bench/results/gpu_acceptance")
    parser.add_argument(
        "--backend",
        default=None,
        help="torch.compile backend (default: inductor; eager with --quick, which "
        "checks graphs and recompiles without code generation)",
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--fail-section",
        choices=SECTIONS,
        default=None,
        help="make this section raise (tests: the others' results must survive)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.backend = args.backend or ("eager" if quick else "inductor")
    args.objects = [2] if quick else [1, 4, 16, 64]
    args.warmup, args.frames = (2, 3) if quick else (10, 40)
    args.warmup_budget = 300.0
    args.streams = [1, 2] if quick else [1, 2, 4, 8]
    args.serve_warmup, args.serve_seconds = (0.3, 1.0) if quick else (3.0, 10.0)
    args.latency_frames = 8 if quick else 150
    args.memory_frames = 30 if quick else 3000
    args.official_objects = [1, 2] if quick else [1, 4, 16]
    args.official_frames = 4 if quick else 60
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no GPU is visible")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from sam2_video.precision import resolve_precision

    machine = {**machine_info(device), "precision": resolve_precision("auto", device).name}
    results: dict = {"machine": machine, "args": vars(args), "sections": {}, "errors": {}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        runners = section_runners(args, device, Path(tmp))
        for name in args.sections:
            t0 = time.monotonic()
            try:
                if name == args.fail_section:
                    raise RuntimeError(f"section {name} failed on purpose (--fail-section)")
                results.update(runners[name]())
                results["sections"][name] = {"ok": True}
            except SectionSkipped as exc:
                results["sections"][name] = {"ok": False, "skipped": str(exc)}
            except Exception as exc:  # noqa: BLE001 - one section's failure must not lose the rest
                results["errors"][name] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8),
                }
                results["sections"][name] = {"ok": False}
                print(f"section {name} failed: {exc}", file=sys.stderr, flush=True)
            results["sections"][name]["seconds"] = round(time.monotonic() - t0, 1)
            results["seconds"] = round(time.monotonic() - started, 1)
            write(out, results)  # after every section: a later crash loses nothing
    print(markdown(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
