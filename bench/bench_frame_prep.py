"""Per-frame preprocessing, auto-seeding's encoder reuse, and the two frame resizes (issue 11).

Three measurements on real 960x540 frames (bedroom.mp4), CPU time, interleaved:
  prep     a uint8 frame -> model input: the float path (`transforms.preprocess`: convert the
           whole frame to float, antialiased bilinear, normalise) vs the streaming session's
           (`transforms.preprocess_frame`: resize as uint8, then normalise), at 256 and 1024.
  seed     `AutoSeeder.propose` on a frame embedding it itself vs reusing the frame's
           features (`AutoSeeder.reusing`), micro checkpoint, 16x16 points.
  resize   the streaming session (uint8 bilinear) vs the offline predictor on a JPEG folder
           (Pillow bicubic, as the official loader): per-frame mask IoU of one clicked object.

  python bench/bench_frame_prep.py --json bench/results/2026-12-01/frame_prep.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import MICRO_CHECKPOINT, REPO, load_model, machine_info, print_table, write_json

from sam2_video import SessionOptions, StreamingSession
from sam2_video.predictors.auto_seed import AutoSeeder, AutoSeedOptions
from sam2_video.predictors.video import SAM2VideoPredictor
from sam2_video.utils.transforms import frame_to_chw, preprocess, preprocess_frame


def clip(count: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(REPO / "tests" / "data" / "bedroom.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_prep(frames: list[np.ndarray], repeats: int) -> list[dict]:
    rows = []
    for size in (256, 1024):
        old, new = [], []
        for _ in range(repeats):
            for f in frames:
                old.append(cpu(lambda: preprocess(f, size, "cpu")))
                new.append(cpu(lambda: preprocess_frame(frame_to_chw(f), size, "cpu")))
        diff = max(
            float(
                (preprocess(f, size, "cpu") - preprocess_frame(frame_to_chw(f), size, "cpu"))
                .abs()
                .max()
            )
            for f in frames
        )
        rows.append(
            {
                "what": f"prep 960x540 -> {size}",
                "before_ms": round(1000 * np.mean(old), 2),
                "after_ms": round(1000 * np.mean(new), 2),
                "ratio": round(np.mean(new) / np.mean(old), 3),
                "note": f"max |diff| {diff:.3f} (normalised units; 1 grey level ~ 0.017)",
            }
        )
    return rows


def bench_seed(model, frames: list[np.ndarray], repeats: int) -> list[dict]:
    options = AutoSeedOptions()
    seeder = AutoSeeder(model, options)
    own, reused = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            for f in frames[:2]:
                own.append(cpu(lambda: seeder.propose(f)))
                features = model.forward_image(
                    preprocess_frame(frame_to_chw(f), model.image_size, "cpu")
                )
                with seeder.reusing(features):
                    reused.append(cpu(lambda: seeder.propose(f)))
    return [
        {
            "what": "auto-seed propose, micro, 960x540",
            "before_ms": round(1000 * np.mean(own), 1),
            "after_ms": round(1000 * np.mean(reused), 1),
            "ratio": round(np.mean(reused) / np.mean(own), 3),
            "note": f"saved {1000 * (np.mean(own) - np.mean(reused)):.1f} ms per seeding",
        }
    ]


def bench_resize(model, frames: list[np.ndarray]) -> list[dict]:
    click = np.array([[480.0, 300.0]], np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(frames):
            cv2.imwrite(
                str(Path(tmp) / f"{i}.jpg"),
                cv2.cvtColor(f, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
        from PIL import Image  # decoded as the folder loader does: only the resize differs

        decoded = [
            np.array(Image.open(Path(tmp) / f"{i}.jpg").convert("RGB")) for i in range(len(frames))
        ]
        pred = SAM2VideoPredictor(model)
        state = pred.init_state(tmp)
        pred.add_new_points_or_box(state, 0, 1, points=click, labels=np.array([1], np.int32))
        offline = [(m[0, 0] > 0).numpy() for _, _, m in pred.propagate_in_video(state)]
    session = StreamingSession(model, SessionOptions())
    session.add_frame(decoded[0])
    streamed = [session.add_points(None, click, np.array([1]))] + [
        session.add_frame(f) for f in decoded[1:]
    ]
    ious = []
    for a, r in zip(offline, streamed):
        b = r.masks[0]
        union = np.count_nonzero(a | b)
        ious.append(np.count_nonzero(a & b) / union if union else 1.0)
    return [
        {
            "what": (
                "masks: streaming (uint8 bilinear) vs JPEG folder (Pillow bicubic), "
                f"{len(frames)} frames"
            ),
            "before_ms": "",
            "after_ms": "",
            "ratio": "",
            "note": f"mask IoU mean {np.mean(ious):.4f}, min {np.min(ious):.4f}",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", nargs="+", default=["prep", "seed", "resize"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = clip(args.frames)
    model = load_model("sam2.1_micro", str(MICRO_CHECKPOINT), torch.device("cpu"))[0]
    rows = []
    if "prep" in args.sections:
        rows += bench_prep(frames[:4], args.repeats)
    if "seed" in args.sections:
        rows += bench_seed(model, frames, args.repeats)
    if "resize" in args.sections:
        rows += bench_resize(model, frames)
    info = machine_info(torch.device("cpu"))
    print(f"# {info['cpu']}, {info['torch_threads']} thread(s), load {info['load_avg_1_5_15']}")
    print_table(rows, ["what", "before_ms", "after_ms", "ratio", "note"])
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
