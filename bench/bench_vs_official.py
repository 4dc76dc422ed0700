"""Ours vs Meta's official SAM 2 in one process: same weights, same inputs, interleaved.

Prints the ratio table of issue 11 (ratio = our CPU time / official CPU time; below 1 is
faster). Every pair of calls runs back to back (ours, then official, repeated), so a shared
machine's load swings hit both alike; times are this process's CPU time
(`time.process_time`) with one torch thread unless `--threads` says otherwise.

Sections (`--sections`, default all but `compiled`):
  image     `set_image` on truck.jpg (1800x1200), micro and hiera_t.
  amg       `generate()` with default settings, micro checkpoint, on truck.jpg scaled to 512 px
            wide and on truck.jpg itself; the outputs are compared mask by mask.
  video     offline video predictor, 960x540 frames of bedroom.mp4 written as a JPEG folder
            that both `init_state`s load; 1 and 16 objects (one click each on frame 0), micro
            and hiera_t. Per frame: `init_state` amortised over the clip plus one step of
            `propagate_in_video` (both generators advanced in turn).
  compiled  micro, 1 object: official `vos_optimized=True` vs our `compile_model`.
  memory    peak RSS (MiB, in the ours_s / official_s columns) of each video predictor in a
            fresh process: hiera_t, `init_state` on a JPEG folder of --rss-frames frames,
            one click, two propagation steps.

Full-size rows use random weights (the same tensor shipped to both). The official package is
imported from the checkout named by the environment variable SAM2_SRC (see bench/official.py);
without it the script says so and exits 0.

  SAM2_SRC=/path/to/sam2 python bench/bench_vs_official.py --json out/vs_official.json
  SAM2_SRC=/path/to/sam2 python bench/bench_vs_official.py --sections amg --configs sam2.1_micro
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

# The checkout this script lives in is the one measured (not another editable install).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import MICRO_CHECKPOINT, REPO, load_model, machine_info, print_table, write_json
from official import OfficialUnavailable, build_official, fit_feature_sizes, import_official

import sam2_video
from sam2_video.precision import Precision
from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from sam2_video.predictors.image import SAM2ImagePredictor
from sam2_video.predictors.video import SAM2VideoPredictor

MEDIA = REPO.parent / "shared" / "media"
CONFIGS = ("sam2.1_micro", "sam2.1_hiera_t")


def media_path(name: str, override: str | None) -> Path:
    for candidate in (
        override,
        REPO / "tests" / "data" / name,
        MEDIA / name,
        Path("/work/shared/media") / name,
    ):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise SystemExit(f"cannot find {name}: pass its path (see --help)")


def cpu_time(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


def checkpoint_for(config: str, tmp: Path) -> Path:
    """The micro checkpoint, or random hiera_t weights saved once as an official checkpoint."""
    if config == "sam2.1_micro":
        return MICRO_CHECKPOINT
    path = tmp / f"{config}_random.pt"
    if not path.exists():
        torch.manual_seed(0)
        model, _ = load_model(config, None, torch.device("cpu"))
        torch.save({"model": model.state_dict()}, path)
    return path


def ratio_row(path: str, ours: list[float], official: list[float], **extra: Any) -> dict[str, Any]:
    o, f = float(np.sum(ours)), float(np.sum(official))
    return {
        "path": path,
        "ours_s": round(o / len(ours), 4),
        "official_s": round(f / len(official), 4),
        "ratio": round(o / f, 3),
        "n": len(ours),
        **extra,
    }


# --------------------------------------------------------------------------- sections


def bench_image(
    official: dict, configs: list[str], image: np.ndarray, repeats: int, tmp: Path
) -> list[dict]:
    rows = []
    for config in configs:
        ckpt = checkpoint_for(config, tmp)
        ours = SAM2ImagePredictor(load_model(config, str(ckpt), torch.device("cpu"))[0])
        theirs = official["SAM2ImagePredictor"](build_official(official, config, ckpt, video=False))
        fit_feature_sizes(theirs, ours.model.image_size)
        ours.set_image(image), theirs.set_image(image)  # warm-up
        t_ours, t_off = [], []
        for _ in range(repeats):
            t_ours.append(cpu_time(lambda: ours.set_image(image))[1])
            t_off.append(cpu_time(lambda: theirs.set_image(image))[1])
        diff = (ours.get_image_embedding() - theirs.get_image_embedding()).abs().max().item()
        rows.append(ratio_row(f"set_image {config}", t_ours, t_off, max_abs_diff=f"{diff:.1e}"))
    return rows


def same_masks(ours: list[dict], theirs: list[dict]) -> str:
    if len(ours) != len(theirs):
        return f"DIFFERENT: {len(ours)} vs {len(theirs)} masks"
    for a, b in zip(ours, theirs):
        if not np.array_equal(a["segmentation"], b["segmentation"]):
            return "DIFFERENT masks"
    return f"identical ({len(ours)} masks)"


def bench_amg(official: dict, images: dict[str, np.ndarray], repeats: int) -> list[dict]:
    config = "sam2.1_micro"
    ours = SAM2AutomaticMaskGenerator(
        load_model(config, str(MICRO_CHECKPOINT), torch.device("cpu"))[0]
    )
    theirs = official["SAM2AutomaticMaskGenerator"](
        build_official(official, config, MICRO_CHECKPOINT, video=False)
    )
    fit_feature_sizes(theirs.predictor, ours.predictor.model.image_size)
    rows = []
    for name, image in images.items():
        t_ours, t_off = [], []
        for _ in range(repeats):
            out_ours, t = cpu_time(lambda: ours.generate(image))
            t_ours.append(t)
            out_off, t = cpu_time(lambda: theirs.generate(image))
            t_off.append(t)
        rows.append(
            ratio_row(f"AMG micro {name}", t_ours, t_off, output=same_masks(out_ours, out_off))
        )
    return rows


def write_jpeg_folder(video: Path, frames: int, folder: Path) -> tuple[int, int]:
    """First `frames` frames of `video` as <i>.jpg (quality 95); returns (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    hw = (0, 0)
    for i in range(frames):
        ok, bgr = capture.read()
        if not ok:
            raise SystemExit(f"{video} has fewer than {frames} frames")
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        hw = bgr.shape[:2]
    capture.release()
    return hw


def click_grid(count: int, hw: tuple[int, int]) -> list[np.ndarray]:
    side = int(np.ceil(np.sqrt(count)))
    h, w = hw
    return [
        np.array([[(k % side + 1) * w / (side + 1), (k // side + 1) * h / (side + 1)]], np.float32)
        for k in range(count)
    ]


def _start_video(predictor: Any, folder: Path, clicks: list[np.ndarray]) -> tuple[Any, Iterator]:
    state = predictor.init_state(str(folder))
    for obj_id, point in enumerate(clicks, start=1):
        predictor.add_new_points_or_box(
            state, frame_idx=0, obj_id=obj_id, points=point, labels=np.array([1], np.int32)
        )
    return state, iter(predictor.propagate_in_video(state))


def bench_video_pair(
    ours: Any,
    theirs: Any,
    folder: Path,
    num_frames: int,
    objects: int,
    hw: tuple[int, int],
    warmup: int,
) -> dict[str, Any]:
    """Per-frame CPU time of both predictors on the same folder; mask IoU ours vs official."""
    clicks = click_grid(objects, hw)
    with torch.inference_mode():
        (_, gen_ours), init_ours = cpu_time(lambda: _start_video(ours, folder, clicks))
        (_, gen_off), init_off = cpu_time(lambda: _start_video(theirs, folder, clicks))
        t_ours, t_off, ious = [], [], []
        for i in range(num_frames):
            (_, _, m_ours), a = cpu_time(lambda: next(gen_ours))
            (_, _, m_off), b = cpu_time(lambda: next(gen_off))
            if i >= warmup:
                t_ours.append(a)
                t_off.append(b)
            x, y = m_ours > 0, m_off > 0
            union = (x | y).sum().item()
            ious.append((x & y).sum().item() / union if union else 1.0)
    # init_state (loading + prompts) amortised over the clip, added to each timed frame.
    per_ours = [t + init_ours / num_frames for t in t_ours]
    per_off = [t + init_off / num_frames for t in t_off]
    return {
        "ours": per_ours,
        "official": per_off,
        "min_mask_iou": round(min(ious), 4),
        "init_ours_s": round(init_ours, 3),
        "init_official_s": round(init_off, 3),
    }


def bench_video(
    official: dict,
    configs: list[str],
    objects: list[int],
    video: Path,
    frames: dict[str, int],
    tmp: Path,
    precisions: tuple[str, ...] = ("fp32",),
) -> list[dict]:
    """Video rows per config, object count and our precision (the official runs fp32)."""
    rows = []
    for config, precision in [(c, p) for c in configs for p in precisions]:
        n = frames[config]
        folder = tmp / f"frames_{n}"
        hw = (
            write_jpeg_folder(video, n, folder)
            if not folder.exists()
            else cv2.imread(str(folder / "00000.jpg")).shape[:2]
        )
        ckpt = checkpoint_for(config, tmp)
        model = load_model(config, str(ckpt), torch.device("cpu"))[0]
        model.precision = Precision(precision)  # bf16: autocast, e.g. on AMX / AVX512-BF16
        ours = SAM2VideoPredictor(model)
        theirs = build_official(official, config, ckpt, video=True)
        for count in objects:
            r = bench_video_pair(ours, theirs, folder, n, count, hw, warmup=1)
            suffix = "" if precision == "fp32" else f" ours {precision}"
            rows.append(
                ratio_row(
                    f"video {count} obj {config} {hw[1]}x{hw[0]}{suffix}",
                    r.pop("ours"),
                    r.pop("official"),
                    **r,
                )
            )
    return rows


def bench_compiled(official: dict, video: Path, num_frames: int, tmp: Path) -> list[dict]:
    from sam2_video.compile import compile_model

    config = "sam2.1_micro"
    folder = tmp / f"frames_{num_frames}"
    hw = (
        write_jpeg_folder(video, num_frames, folder)
        if not folder.exists()
        else cv2.imread(str(folder / "00000.jpg")).shape[:2]
    )
    model = load_model(config, str(MICRO_CHECKPOINT), torch.device("cpu"))[0]
    compile_model(model)
    ours = SAM2VideoPredictor(model)
    theirs = build_official(official, config, MICRO_CHECKPOINT, video=True, vos_optimized=True)
    # Two passes: the first compiles (its times are dropped), the second is measured.
    bench_video_pair(ours, theirs, folder, num_frames, 1, hw, warmup=num_frames)
    r = bench_video_pair(ours, theirs, folder, num_frames, 1, hw, warmup=1)
    return [ratio_row(f"compiled 1 obj {config}", r.pop("ours"), r.pop("official"), **r)]


def _peak_rss_child(
    which: str, config: str, ckpt: str, folder: str, steps: int, queue: Any
) -> None:
    """In a fresh process: load the model, init_state on the folder, one click, `steps`
    propagation steps; report the peak RSS (MiB) before and after."""
    import resource

    torch.set_num_threads(1)
    if which == "ours":
        predictor = SAM2VideoPredictor(load_model(config, ckpt, torch.device("cpu"))[0])
    else:
        predictor = build_official(import_official(), config, Path(ckpt), video=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.inference_mode():
        hw = cv2.imread(str(Path(folder) / "00000.jpg")).shape[:2]
        _, gen = _start_video(predictor, Path(folder), click_grid(1, hw))
        for _ in range(steps):
            next(gen)
    queue.put((before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def bench_memory(video: Path, num_frames: int, steps: int, tmp: Path) -> list[dict]:
    """Peak RSS of each predictor on the same JPEG folder at 1024 (hiera_t), fresh processes."""
    import multiprocessing

    config = "sam2.1_hiera_t"
    ckpt = checkpoint_for(config, tmp)
    folder = tmp / f"frames_rss_{num_frames}"
    if not folder.exists():
        write_jpeg_folder(video, num_frames, folder)
    context = multiprocessing.get_context("spawn")
    result = {}
    for which in ("ours", "official"):
        queue = context.Queue()
        child = context.Process(
            target=_peak_rss_child, args=(which, config, str(ckpt), str(folder), steps, queue)
        )
        child.start()
        result[which] = queue.get()
        child.join()
    (ours_before, ours_peak), (off_before, off_peak) = result["ours"], result["official"]
    return [
        {
            "path": (
                f"peak RSS MiB, {config}, {num_frames} frames 960x540, init_state + {steps} steps"
            ),
            "ours_s": round(ours_peak),
            "official_s": round(off_peak),
            "ratio": round(ours_peak / off_peak, 3),
            "n": 1,
            "model_loaded_mib": f"{ours_before:.0f} / {off_before:.0f}",
        }
    ]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["image", "amg", "video"],
        choices=["image", "amg", "video", "compiled", "memory"],
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 16])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16", "fp16"],
        help="our precision(s) in the video rows, side by side (the official runs fp32)",
    )
    parser.add_argument("--image-repeats", type=int, default=3)
    parser.add_argument("--amg-repeats", type=int, default=1)
    parser.add_argument("--frames-micro", type=int, default=24, help="clip length, micro")
    parser.add_argument("--frames-full", type=int, default=4, help="clip length, hiera_t")
    parser.add_argument("--rss-frames", type=int, default=100, help="clip length, memory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image", default=None, help="truck.jpg path")
    parser.add_argument("--video", default=None, help="bedroom.mp4 path (960x540)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    try:
        official = import_official()
    except OfficialUnavailable as exc:
        print(f"skipped: {exc}")
        return 0
    torch.set_num_threads(args.threads)
    truck = cv2.cvtColor(cv2.imread(str(media_path("truck.jpg", args.image))), cv2.COLOR_BGR2RGB)
    info = machine_info(torch.device("cpu"))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "image" in args.sections:
            rows += bench_image(official, args.configs, truck, args.image_repeats, tmp)
        if "amg" in args.sections:
            small = cv2.resize(truck, (512, 341), interpolation=cv2.INTER_AREA)
            rows += bench_amg(
                official, {"512x341 photo": small, "truck.jpg 1800x1200": truck}, args.amg_repeats
            )
        video = media_path("bedroom.mp4", args.video)
        frames = {"sam2.1_micro": args.frames_micro, "sam2.1_hiera_t": args.frames_full}
        if "video" in args.sections:
            rows += bench_video(
                official, args.configs, args.objects, video, frames, tmp, tuple(args.precisions)
            )
        if "memory" in args.sections:
            rows += bench_memory(video, args.rss_frames, 2, tmp)
        if "compiled" in args.sections:
            rows += bench_compiled(official, video, args.frames_micro, tmp)
    info["load_avg_after"] = machine_info(torch.device("cpu"))["load_avg_1_5_15"]
    info["torchvision_stand_in"] = official["torchvision_stand_in"]
    info["ours_from"] = str(Path(sam2_video.__file__).parent)
    print(
        f"# {info['cpu']}, {info['torch_threads']} thread(s), torch {info['torch']}, "
        f"load {info['load_avg_1_5_15']} -> {info['load_avg_after']}, ours from {info['ours_from']}"
    )
    columns = sorted(
        {k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99
    )
    print_table(rows, columns)
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
