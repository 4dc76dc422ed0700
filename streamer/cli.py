"""`sam2-stream` command line: argument parsing only; each command's logic lives in its module.

Adding a command: write `streamer/<command>.py`, then an `_add_<command>_parser` here that
defines its options and sets `handler` to a function mapping the parsed args to an exit code.
Command modules are imported inside their handler so `sam2-stream --help` stays fast.

Exit codes: 0 success; 1 runtime failure (a download that broke off, unwritable output);
2 bad input (usage, unreadable image, unknown model, missing or unfit checkpoint, unavailable
device, invalid generator option).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

DEFAULT_MODEL = "sam2.1_hiera_t"

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam2-stream", description="SAM 2 segmentation from the command line."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_segment_parser(commands)
    _add_serve_parser(commands)
    _add_track_parser(commands)
    _add_track_many_parser(commands)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --download: shared by the commands that load a model."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="config name or YAML path (default: %(default)s)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="PATH",
        help="checkpoint file (default: the official file name in checkpoints/ or "
        "$SAM2_STREAM_CHECKPOINT_DIR)",
    )
    parser.add_argument(
        "--download", action="store_true", help="download the official checkpoint if missing"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sam2-stream` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)


def _error(command: str, message: object) -> None:
    print(f"sam2-stream {command}: error: {message}", file=sys.stderr)


# --- segment ----------------------------------------------------------------------------


def _add_segment_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "segment",
        help="automatic masks for one image (COCO-style JSON + overlay PNG)",
        description="Segment everything in IMAGE with SAM 2's automatic mask generator and "
        "write OUT/<stem>.json (COCO RLE masks) and OUT/<stem>_overlay.png.",
    )
    parser.add_argument("image", type=Path, metavar="IMAGE")
    _add_model_options(parser)
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
            model=args.model,
            checkpoint=args.checkpoint,
            download=args.download,
            device=args.device,
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
        _error("segment", exc)
        return EXIT_BAD_INPUT
    except (CheckpointDownloadError, segment.OutputWriteError) as exc:
        _error("segment", exc)
        return EXIT_FAILURE
    print(f"{args.image}: {result.num_masks} masks -> {result.json_path}, {result.overlay_path}")
    return EXIT_OK


# --- serve ------------------------------------------------------------------------------


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the live tracking service (HTTP + websocket)",
        description="Serve SAM 2 video tracking over HTTP and websockets. Flags override the "
        "SAM2_STREAM_* environment variables (see streamer/settings.py).",
    )
    parser.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (default: 8000)")
    parser.add_argument("--model", default=None, help=f"config name (default: {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="PATH")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--devices",
        default=None,
        metavar="LIST",
        help="serve on several devices, one scheduler and model replica each, e.g. "
        "cuda:0,cuda:1 or cpu,cpu (default: --device, else every visible GPU, else cpu)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        metavar="N",
        help="sessions whose frames share one batched step at most (default: per device type)",
    )
    parser.add_argument(
        "--vos-optimized",
        action="store_true",
        default=None,
        help="compile the video path with torch.compile (the official vos_optimized mode)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the model's official checkpoint first if it is missing (only that one)",
    )
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sam2_video.build import CheckpointError
    from sam2_video.checkpoints import CheckpointDownloadError, ensure_checkpoint
    from sam2_video.config import ConfigError, load_config
    from streamer.service import serve

    try:
        settings = serve.build_settings(
            host=args.host,
            port=args.port,
            model=args.model,
            checkpoint=args.checkpoint,
            device=args.device,
            devices=None if args.devices is None else [d for d in args.devices.split(",") if d],
            max_batch=args.max_batch,
            vos_optimized=args.vos_optimized,
        )
    except ValidationError as exc:
        _error("serve", exc)
        return EXIT_BAD_INPUT
    # Load before starting the server so a bad model, checkpoint or device is a clean usage
    # error; the model name first, so that a typo says "unknown model", not "no checkpoint".
    try:
        load_config(settings.model)
        if args.download:
            ensure_checkpoint(str(settings.model), settings.checkpoint, download=True)
        models = serve.load_models(settings)
    except CheckpointDownloadError as exc:
        _error("serve", exc)
        return EXIT_FAILURE
    except (ConfigError, CheckpointError, OSError, RuntimeError, ValueError) as exc:
        _error("serve", exc)
        return EXIT_BAD_INPUT
    level = "debug" if args.verbose > 1 else "info"
    serve.serve(settings, models=models, log_level=level)
    return EXIT_OK


# --- track ------------------------------------------------------------------------------

# (flag, type, default, help) of the auto-seed options `track` exposes; the defaults are
# AutoSeedOptions' own (a test checks they agree). The flag maps to the field of the same name.
_SEED_VALUE_OPTIONS: tuple[tuple[str, type, float | int | None, str], ...] = (
    ("--points-per-side", int, 16, "prompt grid is N x N points on the seeding frame"),
    ("--pred-iou-thresh", float, 0.8, "keep masks whose predicted IoU is above this"),
    ("--stability-score-thresh", float, 0.95, "keep masks at least this stable"),
    ("--box-nms-thresh", float, 0.7, "box IoU above which duplicate masks are suppressed"),
    ("--min-area", int, 0, "do not track masks smaller than N pixels"),
    ("--reseed-every", int, None, "seed again every N frames (default: first frame only)"),
)


def _add_track_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "track",
        help="track objects through a video file (COCO / SA-V JSON, PNGs, overlay mp4)",
        description="Track objects through every frame of VIDEO, seeded from a prompts file "
        "(docs/prompts_format.md) or automatically on the first frame, and write the results "
        "to OUT in the chosen formats: coco (<stem>_coco.json), sav (<stem>_sav.json), png "
        "(<stem>_png/NNNNN.png palette images) and mp4 (<stem>_overlay.mp4).",
    )
    parser.add_argument("video", type=Path, metavar="VIDEO")
    seeds = parser.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--prompts", type=Path, metavar="FILE", help="prompts JSON file")
    seeds.add_argument(
        "--auto-seed", action="store_true", help="track what the mask generator finds on frame 0"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="output folder (default: out)"
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        metavar="FMT",
        help="coco, sav, png or mp4; repeat or comma-separate for several (default: coco)",
    )
    _add_model_options(parser)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available"
    )
    parser.add_argument(
        "--max-frames", type=int, default=None, metavar="N", help="stop after N frames"
    )
    parser.add_argument(
        "--max-objects",
        type=int,
        default=64,
        metavar="N",
        help="track at most N objects (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    seed = parser.add_argument_group("auto-seed (mask generator on the seeding frame)")
    for flag, kind, default, text in _SEED_VALUE_OPTIONS:
        seed.add_argument(
            flag,
            type=kind,
            default=default,
            metavar="N" if kind is int else "X",
            help=text if default is None else f"{text} (default: %(default).4g)",
        )
    parser.set_defaults(handler=_run_track)


def _run_track(args: argparse.Namespace) -> int:
    from sam2_video.build import CheckpointError
    from sam2_video.checkpoints import CheckpointDownloadError, CheckpointNotFoundError
    from sam2_video.config import ConfigError
    from streamer.batch import segment, track

    names = [flag[2:].replace("-", "_") for flag, *_ in _SEED_VALUE_OPTIONS]
    seed_options = {name: getattr(args, name) for name in names}
    try:
        summary = track.track_video(
            args.video,
            out_dir=args.out,
            formats=args.formats,
            prompts=args.prompts,
            auto_seed=args.auto_seed,
            seed_options=seed_options,
            max_objects=args.max_objects,
            model=args.model,
            checkpoint=args.checkpoint,
            download=args.download,
            device=args.device,
            max_frames=args.max_frames,
            progress=not args.no_progress,
        )
    except (
        track.VideoInputError,
        track.PromptsFileError,
        track.TrackOptionError,
        segment.DeviceUnavailableError,
        ConfigError,
        CheckpointNotFoundError,
        CheckpointError,
    ) as exc:
        _error("track", exc)
        return EXIT_BAD_INPUT
    except (CheckpointDownloadError, OSError) as exc:
        _error("track", exc)
        return EXIT_FAILURE
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"{args.video}: {summary.frames} frames, {len(summary.obj_ids)} objects "
        f"in {summary.seconds:.1f} s ({rate:.2f} frames/s) -> "
        + ", ".join(str(path) for path in summary.outputs)
    )
    return EXIT_OK


# --- track-many -------------------------------------------------------------------------


def _add_track_many_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "track-many",
        help="track many videos (one output folder each) on this machine or a Ray cluster",
        description="Track every video in INPUTS (files, folders, glob patterns) and --list "
        "files into OUT/<name>/ (the files `track` writes), recording one row per video in "
        "OUT/manifest.jsonl. A rerun skips videos done and complete. Exit 0 when every video "
        "is done, 1 when some failed (see the manifest), 2 for bad input.",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT")
    parser.add_argument(
        "--list", dest="list_files", action="append", type=Path, default=[], metavar="FILE",
        help="text file listing video paths, one per line",
    )  # fmt: skip
    seeds = parser.add_mutually_exclusive_group(required=True)
    seeds.add_argument(
        "--prompts-dir", type=Path, metavar="DIR", help="prompts file DIR/<video stem>.json"
    )
    seeds.add_argument("--auto-seed", action="store_true", help="auto-seed on frame 0")
    parser.add_argument("--out", type=Path, default=Path("out"), metavar="DIR")
    parser.add_argument("--manifest", type=Path, default=None, metavar="FILE",
                        help="default: OUT/manifest.jsonl")  # fmt: skip
    parser.add_argument("--format", dest="formats", action="append", metavar="FMT",
                        help="as for track (default: coco)")  # fmt: skip
    _add_model_options(parser)
    parser.add_argument("--max-frames", type=int, default=None, metavar="N")
    parser.add_argument("--max-objects", type=int, default=64, metavar="N")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per worker (default: torch's)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: one worker per device here; ray: a Ray Data actor pool")  # fmt: skip
    engine.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="local engine: cpu forces one CPU worker (default: every GPU)")  # fmt: skip
    engine.add_argument("--address", default=None,
                        help="ray: cluster address (default: a new local cluster)")  # fmt: skip
    engine.add_argument("--pool-size", type=int, default=1, metavar="N", help="ray: actors")
    engine.add_argument("--num-gpus", type=float, default=0.0, metavar="X",
                        help="ray: GPUs per actor (0: CPU actors)")  # fmt: skip
    engine.add_argument("--num-cpus", type=float, default=1.0, metavar="X",
                        help="ray: CPUs per actor")  # fmt: skip
    engine.add_argument("--max-retries", type=int, default=3, metavar="N",
                        help="ray: restarts of a dead actor / retries of its video")  # fmt: skip
    seed = parser.add_argument_group("auto-seed (mask generator on the seeding frame)")
    for flag, kind, default, text in _SEED_VALUE_OPTIONS:
        seed.add_argument(flag, type=kind, default=default, help=text)
    parser.set_defaults(handler=_run_track_many)


def _run_track_many(args: argparse.Namespace) -> int:
    from sam2_video.build import CheckpointError
    from sam2_video.checkpoints import CheckpointNotFoundError
    from sam2_video.config import ConfigError
    from streamer.batch import segment, track, track_many

    names = [flag[2:].replace("-", "_") for flag, *_ in _SEED_VALUE_OPTIONS]
    try:
        plan = track.plan_track(
            formats=args.formats,
            has_prompts=args.prompts_dir is not None,
            auto_seed=args.auto_seed,
            seed_options={name: getattr(args, name) for name in names},
            max_objects=args.max_objects,
            max_frames=args.max_frames,
        )
        videos = track_many.collect_videos(args.inputs, args.list_files)
        job = track_many.TrackJob(
            plan=plan,
            prompts_dir=args.prompts_dir.resolve() if args.prompts_dir else None,
            model=args.model,
            checkpoint=args.checkpoint.resolve() if args.checkpoint else None,
            threads=args.threads,
        )
        ray_options = {"address": args.address, "pool_size": args.pool_size,
                       "num_gpus": args.num_gpus, "num_cpus": args.num_cpus,
                       "max_retries": args.max_retries}  # fmt: skip
        report = track_many.run_track_many(
            videos, out=args.out, job=job, engine=args.engine, device=args.device,
            manifest_path=args.manifest, progress=not args.no_progress,
            ray_options=ray_options if args.engine == "ray" else None,
        )  # fmt: skip
    except (
        track.TrackOptionError,
        track_many.TrackManyInputError,
        segment.DeviceUnavailableError,
        ConfigError,
        CheckpointNotFoundError,
        CheckpointError,
    ) as exc:
        _error("track-many", exc)
        return EXIT_BAD_INPUT
    except (RuntimeError, OSError) as exc:  # RayEngineError, ManifestError, unwritable OUT
        _error("track-many", exc)
        return EXIT_FAILURE
    done = len(report.rows) - len(report.failed)
    print(f"{done} done, {len(report.failed)} failed, {report.skipped} skipped -> {args.out}")
    for row in report.failed:
        _error("track-many", f"{row.video}: {row.error}")
    return EXIT_FAILURE if report.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
