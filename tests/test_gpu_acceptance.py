"""`bench/gpu_acceptance.py --quick` runs end to end on the CPU, so the GPU script never rots.

On a GPU machine the same script runs in full (`python bench/gpu_acceptance.py`); here its
quick mode exercises every section with the micro model and checks the verdicts it records.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_mode_runs_every_section(tmp_path):
    out = tmp_path / "acceptance"
    subprocess.run(
        [
            sys.executable,
            "bench/gpu_acceptance.py",
            "--quick",
            "--device",
            "cpu",
            "--config",
            "sam2.1_micro",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        timeout=600,
        capture_output=True,
    )
    results = json.loads((out / "gpu_acceptance.json").read_text())
    assert results["fidelity_image"]["pass"] and results["fidelity_video"]["pass"]
    assert results["bf16"]["cases"] == results["fidelity_image"]["cases"] > 0
    assert [r["recompiles_after_warmup"] for r in results["compiled"]] == [0]
    assert {(r["sessions"], r["max_batch"]) for r in results["serving"]} == {
        (1, 1),
        (2, 1),
        (1, 2),
        (2, 2),
    }
    assert all(r["aggregate_fps"] > 0 for r in results["serving"])
    assert results["latency"]["frames"] >= 1 and results["latency"]["p95_ms"] > 0
    assert results["memory"]["growth_second_half"] < 50  # MiB RSS over the stream's second half
    assert "| compiled" in (out / "gpu_acceptance.md").read_text()
