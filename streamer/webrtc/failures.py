"""Failed WebRTC peers, made visible: logged at WARNING, counted in /metrics, listed in the
session's info (`GET /sessions/{id}`, `peer_failures`).

A peer fails when its ICE or DTLS fails (a publisher whose DTLS the server cannot speak, a
firewall), or when it is still not connected `connect_timeout` seconds after its answer (a WHIP
client that got its `201 Created` and never completed). `streamer.webrtc.dtls` says why.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily

logger = logging.getLogger(__name__)

# Failures kept per session (the most recent), and sessions remembered (the most recent).
MAX_FAILURES_PER_SESSION = 8
MAX_SESSIONS_REMEMBERED = 256


class FailureStage(str, enum.Enum):
    ICE = "ice"  # no candidate pair answered
    DTLS = "dtls"  # the handshake failed
    TIMEOUT = "timeout"  # not connected within connect_timeout


@dataclass(frozen=True)
class PeerFailure:
    """One failed peer: which, of what session, at what stage and why."""

    peer_id: str
    session_id: str
    role: str  # "offer" | "whip"
    stage: FailureStage
    reason: str
    at: float  # time.time()

    def public(self) -> dict[str, object]:
        """The JSON-ready form listed in `SessionInfo.peer_failures`."""
        return {
            "peer_id": self.peer_id,
            "role": self.role,
            "stage": self.stage.value,
            "reason": self.reason,
            "at": self.at,
        }


class PeerFailureLog:
    """Counts every failure by (role, stage) and keeps the recent ones per session (bounded;
    a session's entries outlive it, until `MAX_SESSIONS_REMEMBERED` newer sessions push them
    out). Thread-safe: read by the metrics scrape and the session routes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._recent: collections.OrderedDict[str, collections.deque[PeerFailure]] = (
            collections.OrderedDict()
        )

    def record(
        self, *, peer_id: str, session_id: str, role: str, stage: FailureStage, reason: str
    ) -> PeerFailure:
        """Log one peer failure (WARNING), count it and keep it for the session; returns it."""
        failure = PeerFailure(peer_id, session_id, role, stage, reason, time.time())
        logger.warning(
            "peer %s (%s, session %s) failed at %s: %s",
            peer_id,
            role,
            session_id,
            stage.value,
            reason,
        )
        with self._lock:
            self._counts[(role, stage.value)] += 1
            recent = self._recent.pop(session_id, None) or collections.deque(
                maxlen=MAX_FAILURES_PER_SESSION
            )
            recent.append(failure)
            self._recent[session_id] = recent
            while len(self._recent) > MAX_SESSIONS_REMEMBERED:
                self._recent.popitem(last=False)
        return failure

    def for_session(self, session_id: str) -> list[PeerFailure]:
        """The session's recent failures, oldest first."""
        with self._lock:
            return list(self._recent.get(session_id, ()))

    def counts(self) -> dict[tuple[str, str], int]:
        """{(role, stage): failures} since start."""
        with self._lock:
            return dict(self._counts)


class PeerFailureCollector:
    """prometheus_client collector: `sam2_stream_webrtc_peer_failures_total{role, stage}`."""

    def __init__(self, log: PeerFailureLog) -> None:
        self.log = log

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The failure counter, one sample per (role, stage), zeros included."""
        family = CounterMetricFamily(
            "sam2_stream_webrtc_peer_failures",
            "WebRTC peers whose ICE or DTLS failed, or that never connected",
            labels=["role", "stage"],
        )
        counts = self.log.counts()
        for role in ("offer", "whip"):
            for stage in FailureStage:
                family.add_metric([role, stage.value], counts.get((role, stage.value), 0))
        yield family
