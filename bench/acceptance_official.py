"""The `official` section of bench/gpu_acceptance.py: our `vos_optimized` video predictor against
the official `SAM2VideoPredictorVOS` on the same device.

Same random weights (one state dict saved as an official checkpoint and loaded by both), same
clip (a JPEG folder, the official loader's input), same clicks (one per object on frame 0), same
precision (bf16 autocast + TF32 on CUDA on both sides; fp32 on the CPU). For each object count:
frames/s of each after a warm-up pass (compiles), the ratio, the worst mask IoU ours vs
official over the frames, and the peak device memory of each (CUDA).

The official package comes from `SAM2_SRC` (bench/official.py; never committed), with the
wheels of bench/fetch_official_wheels.sh installed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_vs_official import _start_video, checkpoint_for, click_grid, write_jpeg_folder
from official import build_official, import_official

from sam2_video.build import build_sam2
from sam2_video.compile import compile_model
from sam2_video.precision import autocast, resolve_precision
from sam2_video.predictors.video import SAM2VideoPredictor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _peak_memory(device: torch.device, into: dict[str, Any], key: str) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into[key] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _run(predictor: Any, folder: Path, clicks: list[np.ndarray], device, precision) -> tuple:
    """(seconds per frame over the pass, masks per frame (N, H, W) bool)."""
    masks = []
    with torch.inference_mode(), autocast(precision):
        _, frames = _start_video(predictor, folder, clicks)
        _sync(device)
        start = time.perf_counter()
        for _, _, logits in frames:
            masks.append((logits[:, 0] > 0).cpu().numpy())
        _sync(device)
    return (time.perf_counter() - start) / max(len(masks), 1), masks


def official_section(args: Any, device: torch.device, tmp: Path, clip: Path) -> list[dict]:
    """Rows per object count (`args.official_objects`); raises OfficialUnavailable without
    SAM2_SRC. Quick mode (CPU CI) uses the micro model and leaves both sides eager."""
    official = import_official()
    config = "sam2.1_micro" if args.quick else "sam2.1_hiera_t"
    compiled = not args.quick
    checkpoint = checkpoint_for(config, tmp)
    folder = tmp / "official_frames"
    hw = write_jpeg_folder(clip, args.official_frames, folder)
    precision = resolve_precision("auto", device)
    ours_model = build_sam2(config, checkpoint=checkpoint, device=str(device), precision="auto")
    if compiled:
        compile_model(ours_model)
    ours = SAM2VideoPredictor(ours_model)
    theirs = build_official(
        official, config, checkpoint, video=True, vos_optimized=compiled, device=str(device)
    )
    rows = []
    for objects in args.official_objects:
        clicks = click_grid(objects, hw)
        row: dict[str, Any] = {"objects": objects, "config": config, "precision": precision.name}
        _run(ours, folder, clicks, device, precision)  # warm-up pass (compiles)
        with _peak_memory(device, row, "ours_peak_mib"):
            ours_s, ours_masks = _run(ours, folder, clicks, device, precision)
        _run(theirs, folder, clicks, device, precision)
        with _peak_memory(device, row, "official_peak_mib"):
            theirs_s, theirs_masks = _run(theirs, folder, clicks, device, precision)
        ious = []
        for a, b in zip(ours_masks, theirs_masks):
            union = (a | b).sum(axis=(-1, -2))
            inter = (a & b).sum(axis=(-1, -2))
            ious.append(float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).min()))
        row.update(
            ours_fps=round(1 / ours_s, 2),
            official_fps=round(1 / theirs_s, 2),
            fps_ratio=round(theirs_s / ours_s, 3),  # > 1: ours is faster
            min_mask_iou=round(min(ious), 4),
            frames=len(ours_masks),
        )
        rows.append(row)
        print(row, flush=True)
    return rows
