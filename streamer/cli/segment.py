"""`sam2-stream segment`: automatic masks of one image (logic in streamer/batch/segment.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamer.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_model_options,
    model_arg,
    report_error,
)

# (flag, type, default, help) for SAM2AutomaticMaskGenerator's numeric options; defaults are the
# generator's own (a test checks they agree). The flag maps to the keyword of the same name.
_AMG_VALUE_OPTIONS: tuple[tuple[str, type, float | int, str], ...] = (
    ("--points-per-side", int, 32, "prompt grid is N x N points"),
    ("--points-per-batch", int, 64, "prompts decoded per batch; trades memory for speed"),
    ("--pred-iou-thresh", float, 0.8, "keep masks whose predicted IoU is above this"),
    ("--stability-score-thresh", float, 0.95, "keep masks at least this stable"),
    ("--stability-score-offset", float, 1.0, "logit offset used to measure stability"),
    ("--mask-threshold", float, 0.0, "logit threshold that binarises masks"),
    ("--box-nms-thresh", float, 0.7, "box IoU above which duplicate masks are suppressed"),
    ("--crop-n-layers", int, 0, "extra layers of image crops (layer i has 4**i crops)"),
    ("--crop-nms-thresh", float, 0.7, "box IoU for suppressing duplicates across crops"),
    ("--crop-overlap-ratio", float, 512 / 1500, "overlap of neighbouring crops, as a fraction"),
    ("--crop-n-points-downscale-factor", int, 1, "grid side is divided by this per crop layer"),
    ("--min-mask-region-area", int, 0, "fill holes and drop islands under N pixels"),
)


def add_segment_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `segment` command and its options to `commands`."""
    parser = commands.add_parser(
        "segment",
        help="automatic masks for one image (COCO-style JSON + overlay PNG)",
        description="Segment everything in IMAGE with SAM 2's automatic mask generator and "
        "write OUT/<stem>.json (COCO RLE masks) and OUT/<stem>_overlay.png.",
    )
    parser.add_argument("image", type=Path, metavar="IMAGE")
    add_model_options(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="output folder (default: out)"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available"
    )
    amg = parser.add_argument_group("mask generator")
    for flag, kind, default, text in _AMG_VALUE_OPTIONS:
        metavar = "N" if kind is int else "X"
        amg.add_argument(
            flag,
            type=kind,
            default=default,
            metavar=metavar,
            help=f"{text} (default: %(default).4g)",
        )
    amg.add_argument(
        "--use-m2m", action="store_true", help="refine each mask once with its own logits"
    )
    amg.add_argument(
        "--no-multimask",
        dest="multimask_output",
        action="store_false",
        help="one mask per grid point instead of three",
    )
    parser.set_defaults(handler=_run_segment)


def _run_segment(args: argparse.Namespace) -> int:
    from sam2_video.build import CheckpointError
    from sam2_video.checkpoints import CheckpointDownloadError, CheckpointNotFoundError
    from sam2_video.config import ConfigError
    from streamer.batch import segment

    amg_options = {name: getattr(args, name) for name in segment.AMG_PARAMETERS}
    try:
        result = segment.segment_image(
            args.image,
            out_dir=args.out,
            model=model_arg(args),
            checkpoint=args.checkpoint,
            download=args.download,
            device=args.device,
            precision=args.precision,
            amg_options=amg_options,
        )
    except (
        segment.ImageReadError,
        segment.DeviceUnavailableError,
        segment.InvalidOptionError,
        ConfigError,
        CheckpointNotFoundError,
        CheckpointError,
    ) as exc:
        report_error("segment", exc)
        return EXIT_BAD_INPUT
    except (CheckpointDownloadError, segment.OutputWriteError) as exc:
        report_error("segment", exc)
        return EXIT_FAILURE
    print(f"{args.image}: {result.num_masks} masks -> {result.json_path}, {result.overlay_path}")
    return EXIT_OK
