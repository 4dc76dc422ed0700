"""Shared fixtures: paths to the reference data and a loaded micro model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"
MICRO = REFERENCE / "micro"
MICRO_CHECKPOINT = MICRO / "sam2.1_micro.pt"
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The references were produced with 2 threads; results are bit-stable per thread count.
    # Set before every test: an in-process `DeviceScheduler` sets 1 thread process-wide.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def micro_model():
    from sam2_video.build import build_sam2

    return build_sam2("sam2.1_micro", checkpoint=MICRO_CHECKPOINT, device="cpu")


@pytest.fixture(scope="session")
def image_reference():
    return np.load(MICRO / "image.npz"), json.loads((MICRO / "image.json").read_text())
