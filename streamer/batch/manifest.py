"""The manifest of a `track-many` run: one JSON line per video tracked, appended as each ends.

A row says what happened to one video: `status` ("done" or "failed"), `frames`, `objects`,
`seconds`, `worker` (the host:pid or device that ran it) and `error`. A rerun reads the
manifest back: the last row of a video wins, and a video is skipped only when that row is
"done" *and* its output folder exists (outputs are written to a temporary folder and renamed
into place when complete, so an existing folder is a complete one).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Status = Literal["done", "failed"]


class ManifestError(OSError):
    """The manifest file cannot be read or written."""


@dataclass(frozen=True)
class ManifestRow:
    """What happened to one video.

    video: its path as given to the workers (absolute). output: its output folder.
    status: "done" (every output written) or "failed" (`error` says why).
    frames: frames processed; objects: objects tracked; seconds: wall time of the video.
    worker: who ran it ("host:pid device"). finished_at: Unix time the row was written.
    """

    video: str
    output: str
    status: Status
    frames: int = 0
    objects: int = 0
    seconds: float = 0.0
    worker: str = ""
    error: str | None = None
    finished_at: float = field(default_factory=time.time)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestRow:
        """A row from its JSON object; keys this version does not know are ignored."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        """The row as one JSON line (sorted keys, no newline)."""
        return json.dumps(asdict(self), sort_keys=True)


class Manifest:
    """An append-only JSON-lines file of `ManifestRow`s; `append` is thread-safe and flushes
    each row to disk, so an interrupted run keeps every row written before it stopped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> dict[str, ManifestRow]:
        """The last row of each video (by `video`); {} when the file does not exist yet.
        A torn last line (the writer was killed mid-write) is ignored with a warning."""
        rows: dict[str, ManifestRow] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return rows
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {self.path}: {exc}") from exc
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            row = _parse_row(line)
            if isinstance(row, str):
                # Its video (if any) is redone: a rerun never trusts a row it cannot read.
                logger.warning(
                    "%s:%d: unreadable manifest row ignored (%s)", self.path, number, row
                )
                continue
            rows[row.video] = row
        return rows

    def append(self, row: ManifestRow) -> None:
        """Append `row` as one line (thread-safe; a torn last line is left behind, not joined)."""
        line = row.to_json() + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a+b") as file:
                    if file.tell() > 0:  # after a torn last line, start on a line of our own
                        file.seek(-1, os.SEEK_END)
                        if file.read(1) != b"\n":
                            line = "\n" + line
                    file.write(line.encode())
                    file.flush()
                    os.fsync(file.fileno())
            except OSError as exc:
                raise ManifestError(f"cannot write manifest {self.path}: {exc}") from exc


def _parse_row(line: bytes) -> ManifestRow | str:
    """One manifest line as a row, or why it is not one (invalid UTF-8 or JSON, not an
    object, a missing or mistyped field: `[1,2]`, `null`, `42`...)."""
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if not isinstance(data, dict):
        return f"a row must be a JSON object, got {type(data).__name__}"
    try:
        row = ManifestRow.from_dict(data)
    except TypeError as exc:
        return str(exc)
    if not isinstance(row.video, str) or not isinstance(row.output, str):
        return "video and output must be strings"
    if row.status not in ("done", "failed"):
        return f"unknown status {str(row.status)[:40]!r}"
    return row


def is_complete(row: ManifestRow | None) -> bool:
    """True when a rerun may skip the row's video: done, and its output folder is in place."""
    return row is not None and row.status == "done" and Path(row.output).is_dir()
