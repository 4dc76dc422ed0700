"""Atomic `track` outputs: written under a hidden partial folder, moved into place at the end.

A killed or failed run leaves no output under its final name (no invalid `_coco.json`, no
48-byte mp4, no half a PNG sequence): only `.<video>.partial-<hex>/` inside the output folder,
which the next run of that video removes. Each finished output replaces the previous run's
whole file or folder, so a rerun never mixes stale and new frames. Write errors name the
output they hit ("[Errno 28] No space left on device" alone does not).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"


class OutputWriteError(OSError):
    """An output could not be written; the message names it (errno kept)."""


def named_error(exc: OSError, target: Path) -> OutputWriteError:
    """`exc` as an `OutputWriteError` that names `target` (the output's final path)."""
    if isinstance(exc, OutputWriteError):
        return exc
    reason = exc.strerror or str(exc)
    error = OutputWriteError(exc.errno, f"cannot write {target}: {reason}")
    error.filename = str(target)
    return error


def final_path(path: Path, staging: Path, out_dir: Path) -> Path:
    """Where a path inside `staging` ends up in `out_dir`."""
    try:
        return out_dir / Path(path).relative_to(staging)
    except ValueError:
        return Path(path)


@contextlib.contextmanager
def staging_folder(out_dir: Path, name: str) -> Iterator[Path]:
    """A fresh partial folder for the outputs of video `name` inside `out_dir` (created);
    removed when the block raises. Leftovers of earlier runs of `name` are removed first."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for leftover in out_dir.glob(f".{name}{PARTIAL_MARK}*"):
            logger.info("removing partial output %s of an earlier run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        staging = out_dir / f".{name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise named_error(exc, out_dir) from exc
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(outputs: Sequence[Path], staging: Path, out_dir: Path) -> list[Path]:
    """Move finished `outputs` (files or folders inside `staging`) into `out_dir`, each
    replacing the previous run's output of the same name; removes `staging`. Returns the
    final paths."""
    published = []
    for path in outputs:
        target = final_path(path, staging, out_dir)
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # a stale frame sequence: never merged with the new one
            os.replace(path, target)
        except OSError as exc:
            raise named_error(exc, target) from exc
        published.append(target)
    shutil.rmtree(staging, ignore_errors=True)
    return published
