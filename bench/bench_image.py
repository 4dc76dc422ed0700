"""Image benchmark: image-encoder time and automatic-mask-generation (AMG) time per image.

For each device (CPU, and CUDA when present with `--device all`):
  encoder  `SAM2ImagePredictor.set_image` (resize + normalise + image encoder + decoder
           feature projections), p50/p95 over `--repeats` calls after `--warmup`.
  amg      `SAM2AutomaticMaskGenerator.generate` with the official defaults
           (32 x 32 points, batches of 64), `--amg-repeats` calls after `--amg-warmup`.

The micro model uses its checkpoint; full-size configs use `--checkpoint` or random weights
(the same computation; only the number of masks that survive AMG filtering depends on the
weights). Examples (from the repository root):

  python bench/bench_image.py --config sam2.1_micro --json out/image_micro.json
  python bench/bench_image.py --config sam2.1_hiera_t --repeats 3 --amg-repeats 1
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from common import (
    REPO,
    available_devices,
    load_model,
    machine_info,
    print_table,
    stats_ms,
    timed,
    write_json,
)

from sam2_video.predictors.amg import SAM2AutomaticMaskGenerator
from sam2_video.predictors.image import SAM2ImagePredictor

DEFAULT_IMAGE = REPO / "tests" / "data" / "truck.jpg"


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def bench_device(device: torch.device, image: np.ndarray, args: argparse.Namespace) -> dict:
    model, weights = load_model(args.config, args.checkpoint, device)
    predictor = SAM2ImagePredictor(model)
    result: dict[str, Any] = {
        "device": str(device),
        "weights": weights,
        "machine": machine_info(device),
    }
    with torch.inference_mode():
        for _ in range(args.warmup):
            predictor.set_image(image)
        wall, cpu = [], []
        for _ in range(args.repeats):
            _, seconds, cpu_seconds = timed(device, predictor.set_image, image)
            wall.append(seconds)
            cpu.append(cpu_seconds)
        result["encoder"] = {**stats_ms(wall), "cpu": stats_ms(cpu)}

        if args.amg_repeats > 0:
            generator = SAM2AutomaticMaskGenerator(
                predictor,
                points_per_side=args.points_per_side,
                points_per_batch=args.points_per_batch,
            )
            for _ in range(args.amg_warmup):
                masks = generator.generate(image)
            wall, cpu = [], []
            for _ in range(args.amg_repeats):
                masks, seconds, cpu_seconds = timed(device, generator.generate, image)
                wall.append(seconds)
                cpu.append(cpu_seconds)
            result["amg"] = {
                **stats_ms(wall),
                "cpu": stats_ms(cpu),
                "masks": len(masks),
                "points_per_side": args.points_per_side,
                "points_per_batch": args.points_per_batch,
            }
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--checkpoint", default=None, help="default: micro fixture / random")
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--amg-warmup", type=int, default=1)
    parser.add_argument("--amg-repeats", type=int, default=3, help="0 skips AMG")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    image = read_rgb(args.image)
    runs = [bench_device(device, image, args) for device in available_devices(args.device)]
    if not torch.cuda.is_available():
        print("CUDA not available: GPU numbers not measured")
    rows = []
    for run in runs:
        row = {
            "config": args.config,
            "device": run["device"],
            "threads": run["machine"]["torch_threads"],
            "encoder p50 ms": run["encoder"]["p50_ms"],
            "encoder p95 ms": run["encoder"]["p95_ms"],
            "encoder cpu p50 ms": run["encoder"]["cpu"]["p50_ms"],
        }
        if "amg" in run:
            row["AMG s/image (p50)"] = round(run["amg"]["p50_ms"] / 1000, 2)
            row["AMG cpu s (p50)"] = round(run["amg"]["cpu"]["p50_ms"] / 1000, 2)
            row["masks"] = run["amg"]["masks"]
        rows.append(row)
    h, w = image.shape[:2]
    print(f"\nimage benchmark: {args.image.name} ({w}x{h})")
    print_table(rows, list(rows[0]))
    write_json(
        args.json,
        {
            "config": args.config,
            "image": str(args.image),
            "args": {k: str(v) for k, v in vars(args).items()},
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
