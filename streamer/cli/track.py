"""`sam2-stream track` and `track-many`: recorded videos (logic in streamer/batch/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_model_options,
    model_arg,
    report_error,
)
from streamer.cli.detect import add_detector_options, detect_plan

if TYPE_CHECKING:
    from streamer.batch.outputs import OutputOptions

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


def add_track_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `track` command and its options to `commands`."""
    parser = commands.add_parser(
        "track",
        help="track objects through a video file (COCO / SA-V JSON, PNGs, overlay mp4)",
        description="Track objects through every frame of VIDEO, seeded from a prompts file "
        "(docs/prompts_format.md) or automatically on the first frame, and write the results "
        "to OUT in the chosen formats: coco (<stem>_coco.json), sav (<stem>_manual.json and "
        "<stem>_auto.json), png (png/<stem>/NNNNN.png palette images, value = object id) and "
        "mp4 (<stem>_overlay.mp4).",
    )
    parser.add_argument("video", type=Path, metavar="VIDEO")
    seeds = parser.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--prompts", type=Path, metavar="FILE", help="prompts JSON file")
    seeds.add_argument(
        "--auto-seed", action="store_true", help="track what the mask generator finds on frame 0"
    )
    add_detector_options(parser, seeds)
    parser.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="output folder (default: out)"
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        metavar="FMT",
        help="coco, sav, png, mp4 or yolo; repeat or comma-separate for several (default: coco)",
    )
    add_output_layout_options(parser)
    add_model_options(parser)
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
    add_memory_option(parser)
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


def add_memory_option(parser: argparse.ArgumentParser) -> None:
    """--memory: which past frames each object remembers (`SessionOptions.memory`)."""
    parser.add_argument(
        "--memory",
        choices=("sam2", "dam4sam"),
        default="sam2",
        help="which past frames each object remembers: sam2 (default) or dam4sam "
        "(distractor-aware memory, for look-alike objects)",
    )


def add_output_layout_options(parser: argparse.ArgumentParser) -> None:
    """--png-layout and --write-frames (streamer.batch.outputs.OutputOptions)."""
    parser.add_argument(
        "--png-layout",
        choices=("indexed", "per-object"),
        default="indexed",
        help="png: indexed = png/<video>/NNNNN.png, value = object id (ids up to 255); "
        "per-object = png/<video>/<obj:03d>/NNNNN.png, SA-V val/test (default: %(default)s)",
    )
    parser.add_argument(
        "--write-frames",
        action="store_true",
        help="also write the frames as frames/<video>/NNNNN.jpg (the COCO file_names)",
    )


def output_options(args: argparse.Namespace) -> OutputOptions:
    """The `OutputOptions` of the parsed --png-layout / --write-frames options."""
    from streamer.batch.outputs import OutputOptions

    return OutputOptions(png_layout=args.png_layout, write_frames=args.write_frames)


def _run_track(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sam2_video.build import CheckpointError
    from sam2_video.checkpoints import CheckpointDownloadError, CheckpointNotFoundError
    from sam2_video.config import ConfigError
    from sam2_video.detect import DetectorError
    from streamer.batch import segment, track

    names = [flag[2:].replace("-", "_") for flag, *_ in _SEED_VALUE_OPTIONS]
    seed_options = {name: getattr(args, name) for name in names}
    try:
        detect = detect_plan(args)
        summary = track.track_video(
            args.video,
            out_dir=args.out,
            formats=args.formats,
            prompts=args.prompts,
            auto_seed=args.auto_seed,
            seed_options=seed_options,
            max_objects=args.max_objects,
            model=model_arg(args),
            checkpoint=args.checkpoint,
            download=args.download,
            device=args.device,
            precision=args.precision,
            max_frames=args.max_frames,
            progress=not args.no_progress,
            outputs=output_options(args),
            detect=detect,
            memory=args.memory,
        )
    except (
        DetectorError,
        ValidationError,
        track.VideoInputError,
        track.PromptsFileError,
        track.TrackOptionError,
        segment.DeviceUnavailableError,
        ConfigError,
        CheckpointNotFoundError,
        CheckpointError,
    ) as exc:
        report_error("track", exc)
        return EXIT_BAD_INPUT
    except (CheckpointDownloadError, OSError) as exc:
        report_error("track", exc)
        return EXIT_FAILURE
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"{args.video}: {summary.frames} frames, {len(summary.obj_ids)} objects "
        f"in {summary.seconds:.1f} s ({rate:.2f} frames/s) -> "
        + ", ".join(str(path) for path in summary.outputs)
    )
    return EXIT_OK


# --- track-many -------------------------------------------------------------------------


def add_track_many_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `track-many` command and its options to `commands`."""
    parser = commands.add_parser(
        "track-many",
        help="track many videos (one output folder each) on this machine or a Ray cluster",
        description="Track every video in INPUTS (files, folders, glob patterns) and --list "
        "files into OUT/<name>/ (the files `track` writes), recording one row per video in "
        "OUT/manifest.jsonl with the options it was tracked with. A rerun skips videos done "
        "and complete with the same options and tracks again those whose options changed "
        "(--force: every video). Exit 0 when every video is done, 1 when some failed (see the "
        "manifest), 2 for bad input.",
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
    add_detector_options(parser, seeds)
    parser.add_argument("--out", type=Path, default=Path("out"), metavar="DIR")
    parser.add_argument("--manifest", type=Path, default=None, metavar="FILE",
                        help="default: OUT/manifest.jsonl")  # fmt: skip
    parser.add_argument("--format", dest="formats", action="append", metavar="FMT",
                        help="as for track (default: coco)")  # fmt: skip
    add_output_layout_options(parser)
    add_model_options(parser)
    parser.add_argument("--max-frames", type=int, default=None, metavar="N")
    parser.add_argument("--max-objects", type=int, default=64, metavar="N")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per worker (default: torch's)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_memory_option(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="track every video again, even if done with the same options",
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: a worker per device; ray: a Ray Data actor pool")  # fmt: skip
    engine.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="local: cpu forces one CPU worker (default: every GPU)")  # fmt: skip
    engine.add_argument("--address", default=None,
                        help="ray: cluster address (default: a new local cluster)")  # fmt: skip
    engine.add_argument("--pool-size", type=int, default=1, metavar="N", help="ray: actors")
    engine.add_argument("--num-gpus", type=float, default=None, metavar="X",
                        help="ray: GPUs per actor (0: CPU actors; default: 1 when the cluster "
                        "has GPUs, else 0)")  # fmt: skip
    engine.add_argument("--num-cpus", type=float, default=1.0, metavar="X",
                        help="ray: CPUs per actor")  # fmt: skip
    engine.add_argument("--max-retries", type=int, default=3, metavar="N",
                        help="ray: restarts of a dead actor / retries of its video")  # fmt: skip
    seed = parser.add_argument_group("auto-seed (mask generator on the seeding frame)")
    for flag, kind, default, text in _SEED_VALUE_OPTIONS:
        seed.add_argument(flag, type=kind, default=default, help=text)
    parser.set_defaults(handler=_run_track_many)


def _run_track_many(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

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
            outputs=output_options(args),
            detect=detect_plan(args),
            memory=args.memory,
        )
        videos = track_many.collect_videos(args.inputs, args.list_files)
        job = track_many.TrackJob(
            plan=plan,
            prompts_dir=args.prompts_dir.resolve() if args.prompts_dir else None,
            model=model_arg(args),
            checkpoint=args.checkpoint.resolve() if args.checkpoint else None,
            threads=args.threads,
            precision=args.precision,
        )
        ray_options = {"address": args.address, "pool_size": args.pool_size,
                       "num_gpus": args.num_gpus, "num_cpus": args.num_cpus,
                       "max_retries": args.max_retries}  # fmt: skip
        report = track_many.run_track_many(
            videos, out=args.out, job=job, engine=args.engine, device=args.device,
            manifest_path=args.manifest, progress=not args.no_progress,
            ray_options=ray_options if args.engine == "ray" else None, force=args.force,
        )  # fmt: skip
    except (
        ValidationError,
        track.TrackOptionError,
        track_many.TrackManyInputError,
        segment.DeviceUnavailableError,
        ConfigError,
        CheckpointNotFoundError,
        CheckpointError,
    ) as exc:
        report_error("track-many", exc)
        return EXIT_BAD_INPUT
    except (RuntimeError, OSError) as exc:  # RayEngineError, ManifestError, unwritable OUT
        report_error("track-many", exc)
        return EXIT_FAILURE
    done = len(report.rows) - len(report.failed)
    again = f" ({report.redone} tracked again: options changed or --force)" if report.redone else ""
    print(
        f"{done} done{again}, {len(report.failed)} failed, {report.skipped} skipped "
        f"(done with the same options) -> {args.out}"
    )
    for row in report.failed:
        report_error("track-many", f"{row.video}: {row.error}")
    return EXIT_FAILURE if report.failed else EXIT_OK
