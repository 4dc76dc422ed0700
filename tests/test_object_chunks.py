"""Objects run through the decoder / memory encoder in chunks give the batched results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sam2_video.tracking.object_chunks as object_chunks_module
from sam2_video import SessionOptions, StreamingSession
from sam2_video.tracking.object_chunks import chunk_slices, object_chunks

H, W = 96, 128


def test_chunk_table_and_slices():
    assert object_chunks(64 * 64) == (2, 1)  # 1024 input: chunked (measured)
    assert object_chunks(16 * 16) == (None, None)  # 256 input: one batch
    assert object_chunks(64 * 64, "cuda") == (None, None)  # CPU-measured: not applied on CUDA
    assert chunk_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert chunk_slices(5, None) == [slice(0, 5)]
    assert chunk_slices(3, 8) == [slice(0, 3)]


def _frame(t: int) -> np.ndarray:
    rng = np.random.default_rng(t)
    frame = np.full((H, W, 3), 40, np.uint8)
    for k in range(5):
        y, x = 10 + 15 * k + t, 8 + 22 * k
        frame[y : y + 14, x : x + 18] = rng.integers(60, 255, 3)
    return frame


def _run(model) -> list[np.ndarray]:
    session = StreamingSession(model, SessionOptions(fill_hole_area=0))
    session.add_frame(_frame(0))
    for k in range(5):
        mask = np.zeros((H, W), bool)
        mask[10 + 15 * k : 24 + 15 * k, 8 + 22 * k : 26 + 22 * k] = True
        session.add_mask(None, mask)
    return [session.add_frame(_frame(t)).masks for t in range(1, 4)]


@torch.inference_mode()
def test_chunked_objects_equal_one_batch(micro_model, monkeypatch):
    batched = _run(micro_model)
    # Chunks of 2 (decoder) and 1 (memory encoder) on the micro model, 5 objects: uneven
    # last chunks on both paths (tracking and prompt memory).
    monkeypatch.setattr(object_chunks_module, "OBJECT_CHUNKS", ((0, 2, 1),))
    assert object_chunks(16 * 16) == (2, 1)
    chunked = _run(micro_model)
    assert any(m.any() for m in batched)
    for t, (a, b) in enumerate(zip(batched, chunked)):
        assert a.shape == b.shape == (5, H, W)
        # As batched vs alone (tests/test_batching.py): kernels block per batch size, so
        # logits agree to ~1e-3 and the binary masks may differ on a rare boundary pixel.
        assert np.count_nonzero(a != b) <= 10, f"frame {t + 1}"


@pytest.mark.parametrize("count", [1, 2, 3])
def test_chunks_cover_every_row_once(count):
    rows = [i for s in chunk_slices(count, 2) for i in range(s.start, s.stop)]
    assert rows == list(range(count))
