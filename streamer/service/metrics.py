"""The /metrics page: the service's state in the Prometheus text format, via prometheus_client.

The numbers live in the sessions and schedulers (`sessions/stats.py`, `DeviceScheduler`);
`ServiceCollector` turns them into metric families at scrape time, so nothing is counted
twice and a deleted session's series simply disappear. Device series carry the label
`device` (`cuda:0`, `cpu:1`), session series `session`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from streamer.sessions.stats import Histogram

if TYPE_CHECKING:
    from streamer.sessions import Session, SessionManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Batch sizes reported in the batch-size histogram (sessions per batched step).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def render_service_metrics(manager: SessionManager, *extra: Any) -> str:
    """The /metrics page for `manager` (text exposition format 0.0.4), plus the metrics of
    `extra` collectors (e.g. the drain's)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (ServiceCollector(manager), *extra):
        registry.register(collector)
    return generate_latest(registry).decode()


class ServiceCollector:
    """A prometheus_client collector reading a `SessionManager` at each scrape."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        """Every service, device and session metric family, at scrape time."""
        yield from _service_metrics(self.manager)
        yield from _device_metrics(self.manager)
        yield from _compile_metrics(self.manager)
        yield from _session_metrics(self.manager)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily)


def _labelled(family: _Family, samples: Iterable[tuple[list[str], float]]) -> _Family:
    for labels, value in samples:
        family.add_metric(labels, value)
    return family


def histogram_family(
    name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    """A Prometheus histogram family with one labelled series per histogram."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    for label_values, hist in series:
        counts, total = hist.snapshot()
        cumulative, buckets = 0, []
        for bound, n in zip((*hist.buckets, float("inf")), counts):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family.add_metric(label_values, buckets, total)
    return family


def _service_metrics(manager: SessionManager) -> Iterator[Metric]:
    sessions = manager.list()
    yield _gauge(
        "sam2_stream_ready",
        "1 when a model is loaded and a scheduler runs",
        1 if manager.ready else 0,
    )
    yield _gauge("sam2_stream_sessions", "open sessions", len(sessions))
    yield _gauge("sam2_stream_sessions_max", "session limit", manager.settings.max_sessions)
    yield CounterMetricFamily(
        "sam2_stream_sessions_created", "sessions created", value=manager.sessions_created
    )
    schedulers = manager.schedulers.values()
    yield CounterMetricFamily(
        "sam2_stream_worker_frames",
        "frames run through the model (all devices)",
        value=sum(s.frames_processed for s in schedulers),
    )
    yield CounterMetricFamily(
        "sam2_stream_worker_busy_seconds",
        "seconds the schedulers spent running the model (all devices)",
        value=sum(s.busy_seconds for s in schedulers),
    )


def compile_status(manager: SessionManager) -> dict[str, Any]:
    """Per device label: the compiled parts, fallbacks to eager and the warm-up report."""
    from sam2_video.compile import compiled_parts  # loaded with the model: nothing new

    status = {}
    for label, scheduler in manager.schedulers.items():
        parts = compiled_parts(scheduler.model)
        if parts is not None:
            status[label] = parts.status()
    return status


def _compile_metrics(manager: SessionManager) -> Iterator[Metric]:
    status = compile_status(manager)
    if not status:
        return
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_compile_fallbacks",
            "compiled parts running eagerly because compiling them failed (should be 0)",
            labels=["device"],
        ),
        [([label], len(s["fallbacks"])) for label, s in status.items()],
    )
    warmed = {label: s["warmup"] for label, s in status.items() if s["warmup"] is not None}
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_compile_warmup_seconds",
            "seconds the start-up warm-up spent compiling",
            labels=["device"],
        ),
        [([label], w["seconds"]) for label, w in warmed.items()],
    )
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_compile_warmup_complete",
            "1 if the warm-up compiled every batch shape within its time budget",
            labels=["device"],
        ),
        [([label], 1 if w["complete"] else 0) for label, w in warmed.items()],
    )


def _device_metrics(manager: SessionManager) -> Iterator[Metric]:
    schedulers = list(manager.schedulers.values())
    now = time.monotonic()
    sessions = manager.list()
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_device_up", "1 while the device's scheduler runs", labels=["device"]
        ),
        [([s.label], 1 if s.alive else 0) for s in schedulers],
    )
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_device_busy_fraction",
            "fraction of wall time the device's scheduler spent running the model since start",
            labels=["device"],
        ),
        [([s.label], s.busy_seconds / max(now - s.started_at, 1e-9)) for s in schedulers],
    )
    yield _labelled(
        CounterMetricFamily(
            "sam2_stream_device_busy_seconds", "model time on the device", labels=["device"]
        ),
        [([s.label], s.busy_seconds) for s in schedulers],
    )
    yield _labelled(
        CounterMetricFamily(
            "sam2_stream_device_frames", "frames tracked on the device", labels=["device"]
        ),
        [([s.label], s.frames_processed) for s in schedulers],
    )
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_device_queue_depth",
            "sessions with a frame waiting at the scheduler's last step",
            labels=["device"],
        ),
        [([s.label], s.queue_depth) for s in schedulers],
    )
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_device_sessions", "sessions placed on the device", labels=["device"]
        ),
        [([s.label], sum(1 for x in sessions if x.device == s.label)) for s in schedulers],
    )
    yield _labelled(
        GaugeMetricFamily(
            "sam2_stream_device_max_batch", "sessions per batched step at most", labels=["device"]
        ),
        [([s.label], s.max_batch) for s in schedulers],
    )
    batch = HistogramMetricFamily(
        "sam2_stream_batch_size", "sessions per batched frame step", labels=["device"]
    )
    for scheduler in schedulers:
        sizes = dict(scheduler.batch_sizes)
        cumulative, buckets = 0, []
        for bound in BATCH_BUCKETS:
            cumulative = sum(n for size, n in sizes.items() if size <= bound)
            buckets.append((str(float(bound)), cumulative))
        buckets.append(("+Inf", sum(sizes.values())))
        total = sum(size * n for size, n in sizes.items())
        batch.add_metric([scheduler.label], buckets, total)
    yield batch


def _session_metrics(manager: SessionManager) -> Iterator[Metric]:
    sessions = manager.list()
    for session in sessions:
        session.sample_rates()
    stats = {s.id: s.source.stats for s in sessions}
    rates = {s.id: s.rates.rates() for s in sessions}
    info = GaugeMetricFamily(
        "sam2_stream_session_info",
        "session state, source and device (value 1)",
        labels=["session", "kind", "state", "source_state", "back_pressure", "device"],
    )
    for s in sessions:
        info.add_metric(
            [s.id, s.kind, s.state.value, stats[s.id].state.value, s.source.policy.value, s.device],
            1,
        )
    yield info

    def per_session(family: _Family, value: Callable[[Session], float]) -> _Family:
        return _labelled(family, [([s.id], value(s)) for s in sessions])

    for name, field_name, doc in (
        ("sam2_stream_capture_fps", "captured", "frames received from the source per second"),
        ("sam2_stream_processed_fps", "processed", "frames tracked per second"),
        ("sam2_stream_dropped_fps", "dropped", "frames dropped (latest-frame policy) per second"),
    ):
        yield per_session(
            GaugeMetricFamily(name, doc + " (5 s window)", labels=["session"]),
            functools.partial(lambda f, s: rates[s.id][f], field_name),
        )
    counters = (
        (
            "sam2_stream_frames_captured",
            "frames received from the source",
            lambda s: stats[s.id].captured,
        ),
        ("sam2_stream_frames_processed", "frames tracked", lambda s: s.processed),
        (
            "sam2_stream_drm_promotions",
            "frames promoted to a dam4sam object's distractor-resolving memory",
            lambda s: s.promotions,
        ),
        (
            "sam2_stream_frames_dropped",
            "frames dropped before inference",
            lambda s: stats[s.id].dropped,
        ),
        (
            "sam2_stream_session_device_seconds",
            "device time charged to the session",
            lambda s: s.device_seconds,
        ),
        (
            "sam2_stream_messages_dropped",
            "frame messages dropped for slow subscribers (connected ones)",
            lambda s: sum(sub.dropped for sub in s.subscribers),
        ),
    )
    for name, doc, value in counters:
        yield per_session(CounterMetricFamily(name, doc, labels=["session"]), value)
    gauges = (
        (
            "sam2_stream_queue_depth",
            "frames waiting in the source's slot",
            lambda s: stats[s.id].queue_depth,
        ),
        ("sam2_stream_objects", "objects tracked", lambda s: len(s.view.obj_ids)),
        ("sam2_stream_subscribers", "connected subscribers", lambda s: len(s.subscribers)),
    )
    for name, doc, value in gauges:
        yield per_session(GaugeMetricFamily(name, doc, labels=["session"]), value)
    yield histogram_family(
        "sam2_stream_inference_seconds",
        "model time per frame (its batched step)",
        ["session"],
        [([s.id], s.inference) for s in sessions],
    )
    yield histogram_family(
        "sam2_stream_frame_latency_seconds",
        "capture to result, per frame",
        ["session"],
        [([s.id], s.end_to_end) for s in sessions],
    )
