"""Shared helpers of the benchmark scripts: machine description, models, timing, output.

Benchmarks are scripts, not library code: they print a table and may write JSON
(`--json PATH`). Run them from the repository root, e.g. `python bench/bench_stream.py -h`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam2_video.build import build_sam2
from sam2_video.modeling.sam2 import SAM2Model

REPO = Path(__file__).resolve().parent.parent
MICRO_CHECKPOINT = REPO / "tests" / "fixtures" / "reference" / "micro" / "sam2.1_micro.pt"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on (load average: the machine may be shared)."""
    info: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def available_devices(requested: str) -> list[torch.device]:
    """ "cpu", "cuda", or "all" (cpu, plus cuda when present)."""
    if requested == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA requested but torch.cuda.is_available() is False")
    return [torch.device(requested)]


def load_model(config: str, checkpoint: str | None, device: torch.device) -> tuple[SAM2Model, str]:
    """The micro model with its checkpoint; other configs with `checkpoint` or random weights.

    Random weights time the same computation as trained ones (shapes do not depend on values),
    except where outputs steer the work (e.g. how many AMG masks survive filtering).
    """
    if checkpoint is None and config == "sam2.1_micro":
        checkpoint = str(MICRO_CHECKPOINT)
    model = build_sam2(config, checkpoint=checkpoint, device=str(device))
    return model, checkpoint or "random weights"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Run fn(*args); return (result, wall seconds, process CPU seconds), device synchronised.

    On a shared, oversubscribed machine wall time measures the machine's load as much as the
    work; CPU time of this process (all its threads) is the steadier measure of the work.
    """
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn(*args)
    synchronize(device)
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean / min of per-call times, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "min_ms": round(float(ms.min()), 2),
    }


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def moving_boxes(t: int, count: int, height: int, width: int) -> np.ndarray:
    """A synthetic frame (H, W, 3) uint8: `count` coloured boxes on a grid, drifting with t.

    Box k sits in cell k of a ceil(sqrt(count))-wide grid and moves a little every frame, so
    trackers have real (if easy) objects to follow; `box_masks` gives their frame-0 masks.
    """
    frame = np.full((height, width, 3), 48, np.uint8)
    for k, (y0, y1, x0, x1) in enumerate(_box_cells(count, height, width)):
        dy = round(2 * float(np.sin(t / 7 + k)))
        dx = round(3 * float(np.cos(t / 9 + 2 * k)))
        color = ((53 * k + 90) % 256, (97 * k + 30) % 256, (151 * k + 200) % 256)
        frame[max(y0 + dy, 0) : y1 + dy, max(x0 + dx, 0) : x1 + dx] = color
    return frame


def box_masks(count: int, height: int, width: int) -> list[np.ndarray]:
    """(H, W) bool masks of the boxes of `moving_boxes` on frame 0."""
    masks = []
    for k, (y0, y1, x0, x1) in enumerate(_box_cells(count, height, width)):
        dy = round(2 * float(np.sin(k)))
        dx = round(3 * float(np.cos(2 * k)))
        mask = np.zeros((height, width), bool)
        mask[max(y0 + dy, 0) : y1 + dy, max(x0 + dx, 0) : x1 + dx] = True
        masks.append(mask)
    return masks


def _box_cells(count: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    side = int(np.ceil(np.sqrt(max(count, 1))))
    cell_h, cell_w = height // side, width // side
    cells = []
    for k in range(count):
        row, col = divmod(k, side)
        y0, x0 = row * cell_h + cell_h // 4, col * cell_w + cell_w // 4
        cells.append((y0, y0 + max(cell_h // 2, 2), x0, x0 + max(cell_w // 2, 2)))
    return cells


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain fixed-width table of `columns` from `rows`."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
