"""How many objects the tracker runs through the mask decoder / memory encoder at once."""

from __future__ import annotations

# Objects per forward of the mask decoder and of the memory encoder, by the frame's number of
# stride-16 tokens (first entry whose token count is reached wins; None = all objects at
# once). Measured by bench/calibrate_chunks.py (AMD EPYC, 1 thread, 2026-12-01; 16 objects):
# at a 1024 input (4096 tokens) the batch's activations outgrow the CPU caches, and chunks of
# 2 (decoder) / 1 (memory encoder) are 1.7-1.8x / 1.5-1.6x faster than one batch of 16. At 256
# (256 tokens) one decoder batch is fastest (chunks of 1: 2.8-3.7x slower); the memory encoder
# measured 1.3-1.4x faster in chunks of 4-8 there (~15 ms of a 16-object frame), left batched:
# one forward per component per frame is what tests/test_batching.py asserts at that size.
OBJECT_CHUNKS: tuple[tuple[int, int | None, int | None], ...] = (
    # (min tokens, decoder chunk, memory-encoder chunk)
    (64 * 64, 2, 1),
    (0, None, None),
)


def object_chunks(tokens: int, device_type: str = "cpu") -> tuple[int | None, int | None]:
    """(decoder chunk, memory-encoder chunk) for frames of `tokens` stride-16 tokens.

    The table was measured on CPUs (cache sizes): other devices run every object at once
    until a measurement there says otherwise."""
    if device_type != "cpu":
        return None, None
    for min_tokens, decoder, encoder in OBJECT_CHUNKS:
        if tokens >= min_tokens:
            return decoder, encoder
    return None, None


def chunk_slices(count: int, size: int | None) -> list[slice]:
    """Slices covering range(count) in pieces of `size` (one piece when size is None)."""
    step = count if size is None else max(size, 1)
    return [slice(i, min(i + step, count)) for i in range(0, count, max(step, 1))]
