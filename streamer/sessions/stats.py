"""Counters of a session: rates over a sliding window and latency histograms (thread-safe)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

# Inference latency buckets (seconds): a GPU frame is ~10-50 ms, a CPU frame 0.1-2 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RateMeter:
    """Rates of cumulative counters over a sliding time window.

    `sample(now, counts)` records a snapshot; `rates()` gives (last - first) / dt per counter
    over the samples within `window` seconds. Thread-safe.
    """

    def __init__(self, names: Sequence[str], *, window: float = 5.0) -> None:
        self.names = tuple(names)
        self.window = window
        self._samples: deque[tuple[float, tuple[int, ...]]] = deque()
        self._lock = threading.Lock()

    def sample(self, counts: Sequence[int], now: float | None = None) -> None:
        """Record cumulative `counts` at `now` (monotonic seconds; default: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, tuple(counts)))
            # Keep one sample older than the window so a rate spans the whole window.
            while len(self._samples) > 2 and self._samples[1][0] < now - self.window:
                self._samples.popleft()

    def rates(self) -> dict[str, float]:
        """Per-second rate of each counter over the window (0.0 before two samples)."""
        with self._lock:
            if len(self._samples) < 2:
                return dict.fromkeys(self.names, 0.0)
            (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        dt = t1 - t0
        if dt <= 0:
            return dict.fromkeys(self.names, 0.0)
        return {name: (b - a) / dt for name, a, b in zip(self.names, c0, c1)}


@dataclass
class Histogram:
    """Cumulative histogram of observations (Prometheus semantics: `le` buckets, sum, count)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    last: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        """Count one observation `value` (seconds, for latencies)."""
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, value)] += 1
            self.total += value
            self.count += 1
            self.last = value

    def snapshot(self) -> tuple[list[int], float]:
        """Per-bucket counts (the last is +Inf) and the sum, read together under the lock."""
        with self._lock:
            return list(self.counts), self.total

    @property
    def mean(self) -> float:
        """Mean of the observations; 0.0 before the first."""
        return self.total / self.count if self.count else 0.0
