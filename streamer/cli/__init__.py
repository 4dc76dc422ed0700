"""`sam2-stream` command line: argument parsing only; each command's logic lives in its module.

Adding a command: write its logic in its package, then a module here with an
`add_<command>_parser` that defines its options and sets `handler` to a function mapping the
parsed args to an exit code.
Command modules are imported inside their handler so `sam2-stream --help` stays fast.

Exit codes: 0 success; 1 runtime failure (a download that broke off, unwritable output);
2 bad input (usage, unreadable image, unknown model, missing or unfit checkpoint, unavailable
device, invalid generator option).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from streamer.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from streamer.cli.detect import add_annotate_parser
from streamer.cli.segment import add_segment_parser
from streamer.cli.serve import add_serve_parser
from streamer.cli.track import _SEED_VALUE_OPTIONS, add_track_many_parser, add_track_parser

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "_SEED_VALUE_OPTIONS",
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The `sam2-stream` argument parser with every command's sub-parser."""
    parser = argparse.ArgumentParser(
        prog="sam2-stream", description="SAM 2 segmentation from the command line."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_segment_parser(commands)
    add_serve_parser(commands)
    add_track_parser(commands)
    add_track_many_parser(commands)
    add_annotate_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sam2-stream` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)
