"""Graceful drain: stop taking sessions, let the live ones finish, then exit (code 0).

A drain starts on SIGTERM (`DrainingServer`, what Kubernetes sends before it kills a pod) or
on `POST /admin/drain` (bearer token when the service has one). From then on:

- new sessions (`POST /sessions`, `POST /whip`) answer 503 `draining`, which the proxy retries
  on another instance (deploy/nginx: `proxy_next_upstream http_503 non_idempotent`);
- `/readyz` answers 503 with `"draining": true`, so Kubernetes takes the pod out of its
  Service and the gateway's DNS;
- live sessions (waiting or running) go on until they end or `drain_grace_seconds` pass;
- then the instance is drained: the server stops (uvicorn's shutdown closes what is left)
  and `sam2-stream serve` exits with 0, when `drain_exit` is set.

`/metrics` shows `sam2_stream_drain_state{state=...}` and the seconds left
(`DrainCollector`). A second SIGTERM (or SIGINT) during a drain stops at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from streamer.sessions import SessionState

if TYPE_CHECKING:
    import uvicorn

    from streamer.sessions import SessionManager

logger = logging.getLogger(__name__)

LIVE_STATES = frozenset({SessionState.WAITING, SessionState.RUNNING})
POLL_SECONDS = 0.25


class DrainState(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"
    DRAINED = "drained"


class Drainer:
    """The drain of one app (`app.state.drain`).

    manager: returns the app's SessionManager (None before startup). grace_seconds: how long
    live sessions may run once draining. on_drained: called on the event loop when drained
    (the server sets it to stop itself).
    """

    def __init__(
        self,
        *,
        manager: Callable[[], SessionManager | None],
        grace_seconds: float,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self._manager = manager
        self.grace_seconds = grace_seconds
        self.on_drained = on_drained
        self.state = DrainState.SERVING
        self.started_at: float | None = None  # time.monotonic()
        self.reason: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        """True once a drain has started (also when drained): take no new session."""
        return self.state is not DrainState.SERVING

    def seconds_left(self) -> float | None:
        """Grace seconds left while draining; None otherwise."""
        if self.state is not DrainState.DRAINING or self.started_at is None:
            return None
        return max(0.0, self.started_at + self.grace_seconds - time.monotonic())

    def live_sessions(self) -> int:
        """Sessions still waiting or running (0 before the manager exists)."""
        manager = self._manager()
        return 0 if manager is None else sum(s.state in LIVE_STATES for s in manager.list())

    def start(self, reason: str) -> bool:
        """Begin draining (on the event loop); False when a drain had already started."""
        if self.draining:
            return False
        self.state = DrainState.DRAINING
        self.started_at = time.monotonic()
        self.reason = reason
        manager = self._manager()
        if manager is not None:
            manager.draining = True
        logger.warning(
            "draining (%s): %d live sessions, grace %.0f s",
            reason,
            self.live_sessions(),
            self.grace_seconds,
        )
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="drain")
        return True

    async def _watch(self) -> None:
        """Wait (polling, bounded by the grace period) until no session is live."""
        started = self.started_at if self.started_at is not None else time.monotonic()
        deadline = started + self.grace_seconds
        while (live := self.live_sessions()) and time.monotonic() < deadline:
            await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        if live:
            logger.warning("drain grace period over: closing %d live sessions", live)
        self.state = DrainState.DRAINED
        logger.warning("drained after %.1f s", time.monotonic() - started)
        if self.on_drained is not None:
            self.on_drained()

    def info(self) -> dict[str, Any]:
        """The `GET /admin/drain` status: state, reason, live sessions, grace and seconds left."""
        return {
            "state": self.state.value,
            "reason": self.reason,
            "live_sessions": self.live_sessions(),
            "grace_seconds": self.grace_seconds,
            "seconds_left": self.seconds_left(),
        }


class DrainCollector:
    """prometheus_client collector of the drain: one `sam2_stream_drain_state` sample per state
    (1 for the current one) and `sam2_stream_drain_seconds_left` while draining."""

    def __init__(self, drainer: Drainer) -> None:
        self.drainer = drainer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The drain-state gauges and the grace seconds left, at scrape time."""
        state = GaugeMetricFamily(
            "sam2_stream_drain_state",
            "Drain state of this instance (1 = current)",
            labels=["state"],
        )
        for value in DrainState:
            state.add_metric([value.value], int(self.drainer.state is value))
        yield state
        yield GaugeMetricFamily(
            "sam2_stream_drain_seconds_left",
            "Grace seconds left for live sessions",
            value=self.drainer.seconds_left() or 0.0,
        )


def render_drain_metrics(drainer: Drainer) -> str:
    """The drain's metrics alone, in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DrainCollector(drainer))
    return generate_latest(registry).decode()


def drain_router() -> APIRouter:
    """`POST /admin/drain` (start a drain; 202 with the drain's info) and `GET /admin/drain`.
    Auth is the app's bearer-token middleware (every path but /healthz needs the token)."""
    router = APIRouter()

    @router.post("/admin/drain", status_code=202)
    async def start_drain(request: Request) -> dict[str, Any]:
        drainer: Drainer = request.app.state.drain
        drainer.start("POST /admin/drain")
        return drainer.info()

    @router.get("/admin/drain")
    async def drain_info(request: Request) -> dict[str, Any]:
        return request.app.state.drain.info()

    return router


def draining_server(
    config: uvicorn.Config, drainer: Drainer, *, exit_when_drained: bool = True
) -> uvicorn.Server:
    """A uvicorn server whose first SIGTERM starts a drain instead of stopping at once, and
    that stops when the drain is done (exit_when_drained) without re-raising the signal, so
    the process exits with 0."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if sig == signal.SIGTERM and not drainer.draining:
                loop = asyncio.get_event_loop()
                loop.call_soon_threadsafe(drainer.start, "SIGTERM")
                return
            super().handle_exit(sig, frame)

    server = DrainingServer(config)

    def stop() -> None:
        server.should_exit = True

    if exit_when_drained:
        drainer.on_drained = stop
    return server
