"""Detector options shared by `track` / `track-many`, and the `annotate` command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, report_error

if TYPE_CHECKING:
    from streamer.batch.detecting import BatchDetect


def add_detector_options(
    parser: argparse.ArgumentParser, seeds: argparse._MutuallyExclusiveGroup
) -> None:
    """--detector (one of the mutually exclusive seed sources) and its options."""
    seeds.add_argument(
        "--detector",
        metavar="MODEL",
        help="seed objects with a detector: a YOLO .pt (Ultralytics, AGPL-3.0 extra), a "
        "transformers model id or folder (Grounding DINO, OWLv2), or package.module:function",
    )
    group = parser.add_argument_group("detector (with --detector)")
    group.add_argument("--classes", default=None, metavar="A,B",
                       help="class names to keep / look for, comma-separated")  # fmt: skip
    group.add_argument("--text", default=None, metavar="TEXT",
                       help='text prompt for text detectors, e.g. "person. dog."')  # fmt: skip
    group.add_argument("--detect-every", type=int, default=0, metavar="N",
                       help="detect every N frames (default: 0, the first frame only)")  # fmt: skip
    group.add_argument("--detect-min-score", type=float, default=0.25, metavar="X",
                       help="ignore detections scoring below X (default: %(default)s)")  # fmt: skip
    group.add_argument(
        "--detect-iou",
        type=float,
        default=0.5,
        metavar="X",
        help="box IoU at which a detection is a tracked object (default: %(default)s)",
    )


def detect_plan(args: argparse.Namespace) -> BatchDetect | None:
    """The `BatchDetect` of the parsed options, or None without --detector. Raises
    ValueError (pydantic's ValidationError is one) for bad options."""
    if args.detector is None:
        return None
    from streamer.batch.detecting import BatchDetect
    from streamer.protocol import DetectOptions

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    options = DetectOptions(
        classes=classes,
        text=args.text,
        every_n_frames=args.detect_every,
        min_score=args.detect_min_score,
        iou=args.detect_iou,
    )
    return BatchDetect(args.detector, options)


# --- annotate -------------------------------------------------------------------------------


def add_annotate_parser(commands: argparse._SubParsersAction) -> None:
    """`sam2-stream annotate`: Ultralytics' auto_annotate options, with SAM 2 as the model."""
    parser = commands.add_parser(
        "annotate",
        help="YOLO segmentation labels for a folder of images (detector boxes -> SAM 2 masks)",
        description="Ultralytics' auto_annotate on SAM 2: detect with --det-model, segment "
        "each box with --model, and write DATA_auto_annotate_labels/<stem>.txt (class, then "
        "the normalised polygon of each mask).",
    )
    parser.add_argument("data", type=Path, metavar="DATA", help="folder of images (or one)")
    parser.add_argument("--det-model", default="yolov8x.pt", help="default: %(default)s")
    parser.add_argument("--model", default="sam2_b.pt",
                        help="SAM 2 model name or checkpoint (default: %(default)s)")  # fmt: skip
    parser.add_argument("--device", default="", help="cpu, cuda (default: cuda if available)")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.45)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--classes", default=None, metavar="0,2",
                        help="class ids to keep, comma-separated")  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=None, metavar="DIR")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_run_annotate)


def _run_annotate(args: argparse.Namespace) -> int:
    from sam2_video.annotate import auto_annotate
    from sam2_video.build import CheckpointError
    from sam2_video.checkpoints import CheckpointNotFoundError
    from sam2_video.config import ConfigError
    from sam2_video.detect import DetectorError

    try:
        classes = [int(c) for c in args.classes.split(",")] if args.classes else None
        report = auto_annotate(
            args.data, det_model=args.det_model, sam_model=args.model, device=args.device,
            conf=args.conf, iou=args.iou, imgsz=args.imgsz, max_det=args.max_det,
            classes=classes, output_dir=args.output_dir, progress=not args.no_progress,
        )  # fmt: skip
    except (
        ValueError,  # DetectorError, ConfigError, CheckpointError, a bad --classes
        FileNotFoundError,  # CheckpointNotFoundError, no DATA
        DetectorError,
        ConfigError,
        CheckpointError,
        CheckpointNotFoundError,
    ) as exc:
        report_error("annotate", exc)
        return EXIT_BAD_INPUT
    except OSError as exc:
        report_error("annotate", exc)
        return EXIT_FAILURE
    print(
        f"{len(report.written)} label files, {len(report.empty)} images without detections, "
        f"{len(report.errors)} failed -> {report.output_dir}"
    )
    for path, error in report.errors.items():
        report_error("annotate", f"{path}: {error}")
    return EXIT_FAILURE if report.errors else EXIT_OK
