"""Where the official SAM 2 / SAM 2.1 checkpoints live, and fetching them safely.

The registry maps each config name (`configs/<name>.yaml`) to Meta's download URL. A download
streams into a temporary file next to the destination, is checked against the announced size and
loaded once with `torch.load(weights_only=True)` before it is renamed into place, so the
destination is either absent or a complete, loadable checkpoint - never a truncated file.
"""

from __future__ import annotations

import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import torch

from sam2_video.config import ULTRALYTICS_NAMES, canonical_name, ultralytics_name

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR_ENV = "SAM2_STREAM_CHECKPOINT_DIR"
DOWNLOAD_SCRIPT = "checkpoints/download_ckpts.sh"

_SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SAM2_1_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
# Ultralytics' release assets (the tag its `attempt_download_asset` uses in 8.4): Meta's
# weights under Ultralytics' file names (`sam2_b.pt`). AGPL-3.0 applies to Ultralytics' code,
# not to these files, which carry Meta's Apache-2.0 weights.
_ULTRALYTICS_BASE_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
_CHUNK_BYTES = 1 << 20


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint file is not on disk (and was not asked to be downloaded)."""


class CheckpointDownloadError(OSError):
    """A download failed: HTTP error, connection lost, truncated body, or not a checkpoint."""


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One of Meta's released checkpoint files."""

    config_name: str  # config stem, e.g. "sam2.1_hiera_t"
    url: str

    @property
    def filename(self) -> str:
        """The official file name (`sam2.1_hiera_tiny.pt`), also our default on-disk name."""
        return self.url.rsplit("/", 1)[-1]


def _registry() -> dict[str, OfficialCheckpoint]:
    sizes = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
    entries = {}
    for generation, base_url in (("sam2", _SAM2_BASE_URL), ("sam2.1", _SAM2_1_BASE_URL)):
        for short, long in sizes.items():
            name = f"{generation}_hiera_{short}"
            entries[name] = OfficialCheckpoint(name, f"{base_url}/{generation}_hiera_{long}.pt")
    return entries


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = _registry()

# Ultralytics' short name (`sam2.1_b`) -> its release file; config_name is ours (`sam2.1_hiera_b+`).
ULTRALYTICS_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    short: OfficialCheckpoint(config, f"{_ULTRALYTICS_BASE_URL}/{short}.pt")
    for short, config in ULTRALYTICS_NAMES.items()
}


def official_checkpoint(config_name: str) -> OfficialCheckpoint | None:
    """The released checkpoint for a model name, if one exists.

    Meta's for config names and aliases (`sam2.1_hiera_tiny`); Ultralytics' copy of the same
    weights for Ultralytics' names (`sam2.1_t.pt`), so that its file name and URL are kept.
    """
    short = ultralytics_name(config_name)
    if short is not None:
        return ULTRALYTICS_CHECKPOINTS[short]
    return OFFICIAL_CHECKPOINTS.get(canonical_name(config_name))


def checkpoint_dir() -> Path:
    """Checkpoint folder: `$SAM2_STREAM_CHECKPOINT_DIR` if set, else `<repo>/checkpoints`."""
    override = os.environ.get(CHECKPOINT_DIR_ENV)
    return Path(override).expanduser() if override else REPO_ROOT / "checkpoints"


def default_checkpoint_path(config_name: str) -> Path:
    """Where the checkpoint of `config_name` is expected when no path is given.

    Official configs use the official file name (`sam2.1_hiera_t` -> `sam2.1_hiera_tiny.pt`),
    Ultralytics' names theirs (`sam2_b.pt`);
    other configs (e.g. `sam2.1_micro`) use `<config name>.pt`.
    """
    entry = official_checkpoint(config_name)
    filename = entry.filename if entry else f"{canonical_name(config_name)}.pt"
    return checkpoint_dir() / filename


def ensure_checkpoint(config_name: str, checkpoint: Path | None, download: bool) -> Path:
    """Return the checkpoint path for `config_name`, downloading it first if asked to.

    config_name: a model name (config, alias, Ultralytics' `sam2_b.pt`) or a checkpoint file.
    checkpoint: explicit path, or None for `default_checkpoint_path(config_name)`.
    download: fetch the official file to that path when it is missing.
    Raises CheckpointNotFoundError (missing and not downloadable / not asked to download) or
    CheckpointDownloadError.
    """
    named = Path(config_name)
    if checkpoint is None and named.suffix not in (".yaml", ".yml") and named.is_file():
        return named  # the model named by its checkpoint file (config inferred)
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path(config_name)
    if path.is_file():
        return path
    entry = official_checkpoint(config_name)
    if entry is None:
        raise CheckpointNotFoundError(
            f"checkpoint not found: {path} (model {config_name!r} has no official checkpoint to "
            "download; pass the path of its .pt file)"
        )
    if not download and ultralytics_name(config_name) is not None:
        raise CheckpointNotFoundError(
            f"checkpoint for {config_name!r} not found: {path}\n"
            f"Re-run with --download to fetch {entry.url} to {path}"
        )
    if not download:
        script_args = "" if entry.config_name.startswith("sam2.1") else " --all"
        raise CheckpointNotFoundError(
            f"checkpoint for {config_name!r} not found: {path}\n"
            f"Get it with `sh {DOWNLOAD_SCRIPT}{script_args}` (saves {entry.filename} into "
            f"{checkpoint_dir()}), or re-run with --download to fetch {entry.url} to {path}"
        )
    logger.info("downloading %s to %s", entry.url, path)
    return download_checkpoint(entry.url, path)


def download_checkpoint(
    url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download a checkpoint to `dest` atomically and verify it loads with torch.

    timeout: seconds allowed for connecting and for each read (not the whole transfer).
    progress: write a one-line percent/bytes indicator to stderr.
    On any failure the temporary file is removed and `dest` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, progress=sys.stderr if progress else None, timeout=timeout)
        _verify_checkpoint(tmp, url)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _fetch(url: str, out: BinaryIO, *, progress: TextIO | None, timeout: float) -> None:
    """Stream `url` into `out`, failing unless exactly Content-Length bytes arrive."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise CheckpointDownloadError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise CheckpointDownloadError(f"download of {url} failed: {exc}") from exc
    with response:
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        reporter = _Progress(progress, url.rsplit("/", 1)[-1], expected)
        received = 0
        try:
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                reporter.update(received)
        except (http.client.HTTPException, OSError) as exc:
            raise CheckpointDownloadError(
                f"download of {url} interrupted after {received} bytes: {exc!r}"
            ) from exc
        finally:
            reporter.close()
    if expected is not None and received != expected:
        raise CheckpointDownloadError(
            f"download of {url} is truncated: got {received} of {expected} bytes"
        )
    if received == 0:
        raise CheckpointDownloadError(f"download of {url} returned an empty body")


def _verify_checkpoint(path: Path, url: str) -> None:
    """Fail unless `path` loads as an official `{"model": state_dict}` checkpoint."""
    # Every official file uses torch's zip format; checking it first gives a clearer error for
    # the usual wrong body (an HTML error or login page) than torch.load's message would.
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(60)
        raise CheckpointDownloadError(
            f"{url} did not return a PyTorch checkpoint (the body starts with {head!r})"
        )
    try:
        # mmap keeps memory flat for the 900 MB large checkpoint; the tensors are not used.
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch.load raises many types for a non-checkpoint body
        raise CheckpointDownloadError(
            f"{url} did not return a loadable PyTorch checkpoint: {exc}"
        ) from exc
    if not (isinstance(data, dict) and isinstance(data.get("model"), dict)):
        raise CheckpointDownloadError(
            f"{url} returned a PyTorch file that is not a SAM 2 checkpoint "
            "(expected a dict with a 'model' state dict)"
        )


class _Progress:
    """A single self-overwriting stderr line: `name  42% (65.3/155.9 MB)`."""

    def __init__(self, stream: TextIO | None, name: str, total: int | None) -> None:
        self._stream = stream
        self._name = name
        self._total = total
        self._last_shown = -1
        self._written = False

    def update(self, received: int) -> None:
        if self._stream is None:
            return
        mb = received / 1e6
        if self._total:
            percent = min(100, received * 100 // self._total)
            if percent == self._last_shown:
                return
            self._last_shown = percent
            line = f"{self._name} {percent:3d}% ({mb:.1f}/{self._total / 1e6:.1f} MB)"
        else:
            step = int(mb // 10)  # without a size, refresh every 10 MB
            if step == self._last_shown:
                return
            self._last_shown = step
            line = f"{self._name} {mb:.1f} MB"
        self._stream.write("\r" + line)
        self._stream.flush()
        self._written = True

    def close(self) -> None:
        if self._stream is not None and self._written:
            self._stream.write("\n")
            self._stream.flush()
