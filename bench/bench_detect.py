"""Detector seeding benchmark: the detector alone, and stream frames/s with detection every
N frames (N = 1, 10, 30, and never).

The detector is Ultralytics' YOLOv8n built from its yaml (the real architecture, random
weights, seed 0): its cost per frame is that of the trained model, but it finds nothing at
`--conf` 0.25, so detection adds no objects and the stream rows measure the detector plus the
matching, on a stream that tracks `--objects` boxes of a synthetic scene (prompted on frame 0).
The stream runs the service's rule (`streamer.batch.detecting.FrameDetector`). Runs too short
to hold a detection frame for N (N >= frames - 1) are not measured; `fps_derived` is one
frame's tracking plus 1/N of the detection cost measured at N = 1 (compare it with the
measured rows where both exist). Examples:

  python bench/bench_detect.py --config sam2.1_micro --frames 60
  python bench/bench_detect.py --config sam2.1_hiera_t --frames 6 --json out/detect_t.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import box_masks, load_model, machine_info, moving_boxes, print_table, write_json

from sam2_video import SessionOptions, StreamingSession
from sam2_video.detect import load_detector
from streamer.batch.detecting import BatchDetect, FrameDetector
from streamer.protocol import DetectOptions


def tiny_yolo(folder: Path) -> Path:
    """YOLOv8n from its yaml with random weights (seed 0), saved as a .pt file."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(folder))
    from sam2_video.detect.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from ultralytics import YOLO

    torch.manual_seed(0)
    path = folder / "yolov8n_random.pt"
    YOLO("yolov8n.yaml").save(str(path))
    return path


def detector_alone(detector, frames: list, repeats: int) -> float:
    """Mean seconds per frame of the detector alone (after one warm-up call)."""
    detector(frames[0])
    start = time.perf_counter()
    for i in range(repeats):
        detector(frames[i % len(frames)])
    return (time.perf_counter() - start) / repeats


def stream_fps(model, frames: list, objects: int, plan: BatchDetect | None) -> float:
    """Frames/s of a stream of `frames` tracking `objects` boxes, detecting per `plan`."""
    h, w = frames[0].shape[:2]
    session = StreamingSession(model, SessionOptions(max_objects=64))
    detection = FrameDetector(plan, str(model.device)) if plan else None
    session.add_frame(frames[0])
    for mask in box_masks(objects, h, w):
        session.add_mask(None, mask)
    start = time.perf_counter()
    for frame in frames[1:]:
        session.add_frame(frame)
        if detection is not None:
            detection.apply(session, frame)
    return (len(frames) - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(640, 360), metavar=("W", "H"))
    parser.add_argument("--imgsz", type=int, default=640, help="detector input size")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model, weights = load_model(args.config, args.checkpoint, device)
    w, h = args.size
    frames = [moving_boxes(t, args.objects, h, w) for t in range(args.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        yolo = str(tiny_yolo(Path(tmp)))
        detector = load_detector(yolo, min_score=args.conf, imgsz=args.imgsz)
        alone = detector_alone(detector, frames, repeats=10)
        rows = [{"run": "detector alone (YOLOv8n)", "ms_per_frame": round(alone * 1000, 1)}]
        baseline = stream_fps(model, frames, args.objects, None)
        rows.append({"run": "stream, no detection", "fps": round(baseline, 3), "vs_none": 1.0})
        every_one = None
        for every in sorted(args.every):
            row = {"run": f"stream, detect every {every}"}
            if every < len(frames) - 1 or every == 1:  # the run holds a detection frame
                options = DetectOptions(every_n_frames=every, min_score=args.conf)
                fps = stream_fps(model, frames, args.objects, BatchDetect(yolo, options))
                row.update(fps=round(fps, 3), vs_none=round(fps / baseline, 3))
                every_one = every_one or (1 / fps - 1 / baseline)  # detection s per frame
            if every_one is not None:
                # One frame's tracking plus 1/N of one detection (measured at N = 1).
                derived = 1 / (1 / baseline + every_one / every)
                row["fps_derived"] = round(derived, 3)
            rows.append(row)
    info = machine_info(device)
    info.update(config=args.config, weights=weights, frames=args.frames, objects=args.objects,
                size=[w, h], imgsz=args.imgsz)  # fmt: skip
    print(info, file=sys.stderr)
    print_table(rows, ["run", "ms_per_frame", "fps", "vs_none", "fps_derived"])
    if args.json:
        write_json(args.json, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
