"""What the `sam2-stream` commands share: exit codes, the model options, error output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

DEFAULT_MODEL = "sam2.1_hiera_t"
# sam2_video.precision.PRECISION_CHOICES, spelled out so that `--help` does not import torch.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --download, --precision: shared by the commands that load a model."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="config name (default: %(default)s), Ultralytics' name (sam2_b.pt, sam2.1_t.pt, "
        "...), a YAML path, or a checkpoint file whose model is inferred",
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
    add_precision_option(parser)


def add_precision_option(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--precision: auto (bf16 autocast + TF32 on CUDA, fp32 on the CPU), fp32, bf16, fp16."""
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=default,
        help="auto: bf16 autocast + TF32 on CUDA as the official runs, fp32 on the CPU "
        "(default: auto)",
    )


def model_arg(args: argparse.Namespace) -> str:
    """--model; with the default model and a --checkpoint, the checkpoint file itself (its
    model is inferred from its keys and shapes, so `--checkpoint sam2_b.pt` alone works)."""
    if args.model == DEFAULT_MODEL and args.checkpoint is not None:
        return str(args.checkpoint)
    return args.model


def report_error(command: str, message: object) -> None:
    """Print `sam2-stream <command>: error: <message>` to stderr (the user's terminal)."""
    print(f"sam2-stream {command}: error: {message}", file=sys.stderr)
