"""Our streaming session in fp32 and in bf16 autocast on this CPU: per-frame CPU time and mask IoU.

    python bench/bench_bf16_cpu.py --config sam2.1_hiera_t --frames 6

Same random weights for both (one state dict), the reference clip's 320x180 frames, one click
on frame 0, two frames of warm-up, then `--frames` timed frames (process CPU time, 1 thread),
each precision twice, interleaved. bf16 pays off on CPUs with AMX / AVX512-BF16
(`sam2_video.precision.cpu_has_fast_bf16`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sam2_video.build import build_sam2
from sam2_video.precision import cpu_has_fast_bf16
from sam2_video.predictors.streaming import StreamingSession

FRAMES = Path(__file__).resolve().parents[1] / "tests/fixtures/reference/micro/video_frames.npz"


def run(config: str, precision: str, state: dict, frames: np.ndarray, timed: int) -> tuple:
    """(CPU ms per timed frame, masks (timed, N, H, W) bool)."""
    model = build_sam2(config, device="cpu", precision=precision)
    model.load_state_dict(state)
    session = StreamingSession(model)
    session.add_frame(frames[0])
    session.add_points(None, np.array([[160.0, 90.0]]), np.array([1]))
    for t in (1, 2):
        session.add_frame(frames[t])
    start = time.process_time()
    masks = [session.add_frame(frames[t]).masks for t in range(3, 3 + timed)]
    return (time.process_time() - start) / timed * 1000, np.stack(masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = np.load(FRAMES)["frames_uint8"]
    torch.manual_seed(0)
    state = build_sam2(args.config, device="cpu", precision="fp32").state_dict()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    masks = {}
    for precision in ("fp32", "bf16", "fp32", "bf16"):
        ms, masks[precision] = run(args.config, precision, state, frames, args.frames)
        times[precision].append(round(ms, 1))
    a, b = masks["fp32"], masks["bf16"]
    union = (a | b).sum(axis=(-1, -2))
    iou = np.where(union > 0, (a & b).sum(axis=(-1, -2)) / np.maximum(union, 1), 1.0)
    result = {
        "config": args.config,
        "cpu_has_fast_bf16": cpu_has_fast_bf16(),
        "ms_per_frame": times,
        "speedup": round(min(times["fp32"]) / min(times["bf16"]), 2),
        "min_mask_iou": round(float(iou.min()), 4),
    }
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
