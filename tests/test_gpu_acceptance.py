"""`bench/gpu_acceptance.py --quick` runs end to end on the CPU, so the GPU script never rots.

On a GPU machine the same script runs in full (`python bench/gpu_acceptance.py`); here its
quick mode exercises every section with the micro model and checks the verdicts it records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # every section, the official one too when SAM2_SRC is set: minutes on 2 cores
@pytest.mark.timeout(1800)
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
        timeout=1500,
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
    assert results["errors"] == {}
    assert all(r["fallbacks"] == [] and r["warmup_complete"] for r in results["compiled"])
    assert results["bf16_video"]["scenarios"] == 1
    official = results["sections"]["official"]
    if os.environ.get("SAM2_SRC"):  # the official code is there: the section must run
        assert official["ok"] and [r["objects"] for r in results["official"]] == [1, 2]
        assert all(r["min_mask_iou"] > 0.9 for r in results["official"])
    else:
        assert "SAM2_SRC" in official["skipped"]


def test_a_failing_section_leaves_the_others_results(tmp_path):
    """Each section runs in its own try and the JSON is written after each: a section that
    raises (injected with --fail-section) is recorded, and the sections before and after it
    keep their results."""
    out = tmp_path / "acceptance"
    run = subprocess.run(
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
            "--sections",
            "fidelity",
            "bf16",
            "memory",
            "--fail-section",
            "bf16",
        ],
        cwd=REPO,
        timeout=600,
        capture_output=True,
    )
    assert run.returncode == 1  # a failed section is a failed run
    results = json.loads((out / "gpu_acceptance.json").read_text())
    assert list(results["errors"]) == ["bf16"]
    assert "failed on purpose" in results["errors"]["bf16"]["error"]
    assert results["fidelity_image"]["pass"] and results["memory"]["frames"] == 30
    assert "bf16" not in results
    assert [results["sections"][s]["ok"] for s in ("fidelity", "bf16", "memory")] == [
        True,
        False,
        True,
    ]
    assert "| bf16 FAILED |" in (out / "gpu_acceptance.md").read_text()
