"""The Prometheus text rendering of the service's counters and statistics.

Written by hand (text exposition format 0.0.4) to keep the dependency list short.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from streamer.sessions.stats import Histogram

if TYPE_CHECKING:
    from streamer.sessions import SessionManager

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class MetricsWriter:
    """Builds one Prometheus text page: `metric(...)` per family, samples with labels."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float]],
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, help_text: str, series: Iterable[tuple[dict[str, str], Histogram]]
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} histogram")
        for labels, hist in series:
            with hist._lock:
                counts, total, count = list(hist.counts), hist.total, hist.count
            cumulative = 0
            for bound, n in zip((*hist.buckets, float("inf")), counts):
                cumulative += n
                bucket_labels = {**labels, "le": _number(bound)}
                self._lines.append(f"{name}_bucket{_labels(bucket_labels)} {cumulative}")
            self._lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
            self._lines.append(f"{name}_count{_labels(labels)} {count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_service_metrics(manager: SessionManager) -> str:
    """The /metrics page: service totals and per-session series (label `session`)."""
    sessions = manager.list()
    for session in sessions:
        session.sample_rates()
    out = MetricsWriter()
    worker = manager.worker
    out.metric(
        "sam2_stream_ready",
        "gauge",
        "1 when the model is loaded and the worker runs",
        [({}, 1 if manager.ready else 0)],
    )
    out.metric("sam2_stream_sessions", "gauge", "open sessions", [({}, len(sessions))])
    out.metric(
        "sam2_stream_sessions_max", "gauge", "session limit", [({}, manager.settings.max_sessions)]
    )
    out.metric(
        "sam2_stream_sessions_created_total",
        "counter",
        "sessions created",
        [({}, manager.sessions_created)],
    )
    out.metric(
        "sam2_stream_worker_frames_total",
        "counter",
        "frames run through the model",
        [({}, worker.frames_processed)],
    )
    out.metric(
        "sam2_stream_worker_busy_seconds_total",
        "counter",
        "seconds the worker spent in inference",
        [({}, worker.busy_seconds)],
    )

    labelled = [({"session": s.id}, s) for s in sessions]
    stats = {s.id: s.source.stats for s in sessions}
    rates = {s.id: s.rates.rates() for s in sessions}
    out.metric(
        "sam2_stream_session_info",
        "gauge",
        "session state and source (value 1)",
        [
            (
                {
                    "session": s.id,
                    "kind": s.kind,
                    "state": s.state.value,
                    "source_state": stats[s.id].state.value,
                    "back_pressure": s.source.policy.value,
                },
                1,
            )
            for s in sessions
        ],
    )
    for name, field_name, help_text in (
        ("sam2_stream_capture_fps", "captured", "frames received from the source per second"),
        ("sam2_stream_processed_fps", "processed", "frames tracked per second"),
        ("sam2_stream_dropped_fps", "dropped", "frames dropped (latest-frame policy) per second"),
    ):
        out.metric(
            name,
            "gauge",
            help_text + " (5 s window)",
            [(labels, rates[s.id][field_name]) for labels, s in labelled],
        )
    out.metric(
        "sam2_stream_frames_captured_total",
        "counter",
        "frames received from the source",
        [(labels, stats[s.id].captured) for labels, s in labelled],
    )
    out.metric(
        "sam2_stream_frames_processed_total",
        "counter",
        "frames tracked",
        [(labels, s.processed) for labels, s in labelled],
    )
    out.metric(
        "sam2_stream_frames_dropped_total",
        "counter",
        "frames dropped before inference",
        [(labels, stats[s.id].dropped) for labels, s in labelled],
    )
    out.metric(
        "sam2_stream_queue_depth",
        "gauge",
        "frames waiting in the source's slot",
        [(labels, stats[s.id].queue_depth) for labels, s in labelled],
    )
    out.metric(
        "sam2_stream_objects",
        "gauge",
        "objects tracked",
        [(labels, len(s.view.obj_ids)) for labels, s in labelled],
    )
    out.metric(
        "sam2_stream_subscribers",
        "gauge",
        "connected subscribers",
        [(labels, len(s.subscribers)) for labels, s in labelled],
    )
    out.metric(
        "sam2_stream_messages_dropped_total",
        "counter",
        "frame messages dropped for slow subscribers (connected ones)",
        [(labels, sum(sub.dropped for sub in s.subscribers)) for labels, s in labelled],
    )
    out.histogram(
        "sam2_stream_inference_seconds",
        "model time per frame",
        [(labels, s.inference) for labels, s in labelled],
    )
    out.histogram(
        "sam2_stream_frame_latency_seconds",
        "capture to result, per frame",
        [(labels, s.end_to_end) for labels, s in labelled],
    )
    return out.text()
