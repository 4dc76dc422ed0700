"""Per-frame cost of the DAM4SAM memory (`memory="dam4sam"`) against SAM 2's (`"sam2"`).

For each object count, two sets of objects (one per memory kind) track the same synthetic
stream (`common.moving_boxes`, objects prompted with their frame-0 masks) frame by frame, in
turn, so that a busy machine's load swings hit both alike. Timed per frame: the tracking step
(`FrameTracker.track`: memory selection, memory attention, decoder, memory encoder, and for
dam4sam the promotion rule at video resolution and the re-encoding of promoted frames) and the
image encoder once (shared by both kinds). Storage is bounded as in a live session.

Examples (from the repository root):

  python bench/bench_dam4sam.py --config sam2.1_micro --objects 1 16
  python bench/bench_dam4sam.py --config sam2.1_hiera_t --objects 1 16 --frames 6 --warmup 2
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from common import (
    box_masks,
    load_model,
    machine_info,
    moving_boxes,
    print_table,
    stats_ms,
    timed,
    write_json,
)

from sam2_video.tracking.dam4sam import Dam4SamMemory, new_object_memory
from sam2_video.tracking.memory_bank import ObjectMemory, RetentionPolicy
from sam2_video.tracking.prompts import prepare_mask_prompt
from sam2_video.tracking.tracker import FrameTracker, TrackerOptions
from sam2_video.utils.transforms import frame_to_chw, preprocess_frame

KINDS = ("sam2", "dam4sam")


def _start(tracker: FrameTracker, kind: str, count: int, hw: tuple[int, int]) -> list:
    """Objects of one memory kind, prompted with the boxes' masks on frame 0."""
    model = tracker.model
    image = preprocess_frame(frame_to_chw(moving_boxes(0, count, *hw)), model.image_size, "cpu")
    features = model.forward_image(image.to(tracker.device))
    objects: list[ObjectMemory] = []
    outputs = []
    for k, mask in enumerate(box_masks(count, *hw)):
        obj = new_object_memory(k + 1, kind, hw)
        model_mask = prepare_mask_prompt(torch.from_numpy(mask), model.image_size, tracker.device)
        output, _ = tracker.prompt_mask(features, obj, 0, model_mask)
        outputs.append(output)
        objects.append(obj)
    tracker.encode_prompted(features, outputs)
    for obj, output in zip(objects, outputs):
        obj.conditioning[0] = output
        obj.frames_tracked[0] = False
    return objects


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    model, weights = load_model(args.config, args.checkpoint, device)
    with torch.inference_mode():
        rows = _measure(model, device, args)
    print_table(rows, list(rows[0]))
    return {
        "machine": machine_info(device),
        "config": args.config,
        "weights": weights,
        "frame_hw": [args.height, args.width],
        "warmup": args.warmup,
        "frames": args.frames,
        "rows": rows,
    }


def _measure(model, device: torch.device, args: argparse.Namespace) -> list[dict[str, Any]]:
    hw = (args.height, args.width)
    window = max(model.num_maskmem - 1, model.config.max_obj_ptrs_in_encoder - 1)
    policy = RetentionPolicy(max_conditioning_frames=4, max_frame_distance=window)
    trackers = {
        "sam2": FrameTracker(model, TrackerOptions(fill_hole_area=0)),
        "dam4sam": FrameTracker(model, TrackerOptions(fill_hole_area=0, multimask_max_points=3)),
    }
    rows = []
    for count in args.objects:
        objects = {kind: _start(trackers[kind], kind, count, hw) for kind in KINDS}
        step_s: dict[str, list[float]] = {kind: [] for kind in KINDS}
        step_cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
        encoder_s = []
        for t in range(1, args.warmup + args.frames + 1):
            frame = frame_to_chw(moving_boxes(t, count, *hw))
            image = preprocess_frame(frame, model.image_size, device)
            features, enc_wall, _ = timed(device, model.forward_image, image)
            for kind in KINDS:
                outputs, wall, cpu = timed(
                    device, trackers[kind].track, features, objects[kind], t, False, None
                )
                for obj, out in zip(objects[kind], outputs):
                    obj.tracked[t] = out
                    obj.frames_tracked[t] = False
                    obj.retain(t, policy, model.num_maskmem)
                if t > args.warmup:
                    step_s[kind].append(wall)
                    step_cpu[kind].append(cpu)
            if t > args.warmup:
                encoder_s.append(enc_wall)
        promotions = sum(
            obj.promotion_count for obj in objects["dam4sam"] if isinstance(obj, Dam4SamMemory)
        )
        encoder = stats_ms(encoder_s)
        for kind in KINDS:
            step = stats_ms(step_s[kind])
            cpu = stats_ms(step_cpu[kind])
            rows.append(
                {
                    "memory": kind,
                    "objects": count,
                    "track_p50_ms": step["p50_ms"],
                    "track_mean_ms": step["mean_ms"],
                    "track_cpu_mean_ms": cpu["mean_ms"],
                    "encoder_p50_ms": encoder["p50_ms"],
                    "frame_p50_ms": round(step["p50_ms"] + encoder["p50_ms"], 2),
                    "promotions": promotions if kind == "dam4sam" else "",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--checkpoint", default=None, help="default: micro's, else random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--frames", type=int, default=20, help="timed frames per count")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    write_json(args.json, run(args))


if __name__ == "__main__":
    main()
