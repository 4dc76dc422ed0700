"""The blocking client: `AsyncClient` run on an event loop in a background thread of its own,
so it works from scripts and notebooks (which may have a loop of their own running)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from streamer.client import messages
from streamer.client.aio import DEFAULT_TIMEOUT_S, AsyncClient, AsyncSession

T = TypeVar("T")


class _LoopThread:
    """An event loop on a daemon thread; `run(coro)` blocks until the coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="sam2-stream-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class Client:
    """Blocking form of `AsyncClient` (same arguments); use as a context manager or `close()`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify: Any = True,
    ) -> None:
        self._loop = _LoopThread()
        self._sessions: list[Session] = []

        async def build() -> AsyncClient:  # httpx binds to the loop that creates it
            return AsyncClient(base_url, token=token, timeout=timeout, verify=verify)

        self._async = self._loop.run(build())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every session's connection, then the client (idempotent)."""
        if self._loop.loop.is_closed():
            return
        for session in self._sessions:
            session.close()
        self._loop.run(self._async.close())
        self._loop.stop()

    def sessions(self) -> list[dict[str, Any]]:
        """As `AsyncClient.sessions`."""
        return self._loop.run(self._async.sessions())

    def limits(self) -> dict[str, Any]:
        """As `AsyncClient.limits`."""
        return self._loop.run(self._async.limits())

    def open_session(self, source: str, **options: Any) -> Session:
        """As `AsyncClient.open_session`."""
        return self._wrap(self._loop.run(self._async.open_session(source, **options)))

    def session(self, session_id: str, *, token: str | None = None) -> Session:
        """As `AsyncClient.session`."""
        return self._wrap(self._loop.run(self._async.session(session_id, token=token)))

    def _wrap(self, session: AsyncSession) -> Session:
        wrapped = Session(session, self._loop)
        self._sessions.append(wrapped)
        return wrapped


class Session:
    """Blocking form of `AsyncSession`."""

    def __init__(self, session: AsyncSession, loop: _LoopThread) -> None:
        self._session = session
        self._loop = loop
        self._closed = False
        self.id = session.id
        self.info = session.info
        self.token = session.token
        self.viewer_token = session.viewer_token
        self.hello = session.hello

    @property
    def end(self) -> dict[str, Any] | None:
        """The session's `end` message, once it came (else None)."""
        return self._session.end

    @property
    def frames_dropped(self) -> int:
        """Frames this client dropped because nobody read them."""
        return self._session.frames_dropped

    def add_points(
        self,
        points: Sequence[Sequence[float]],
        labels: Sequence[int],
        *,
        obj_id: int | None = None,
        box: Sequence[float] | None = None,
        frame_idx: int | None = None,
    ) -> messages.Reply:
        """As `AsyncSession.add_points`."""
        return self._loop.run(
            self._session.add_points(points, labels, obj_id=obj_id, box=box, frame_idx=frame_idx)
        )

    def add_box(self, box: Sequence[float], *, obj_id: int | None = None) -> messages.Reply:
        """As `AsyncSession.add_box`."""
        return self._loop.run(self._session.add_box(box, obj_id=obj_id))

    def add_mask(self, mask: np.ndarray, *, obj_id: int | None = None) -> messages.Reply:
        """As `AsyncSession.add_mask`."""
        return self._loop.run(self._session.add_mask(mask, obj_id=obj_id))

    def auto_seed(self) -> messages.Reply:
        """As `AsyncSession.auto_seed`."""
        return self._loop.run(self._session.auto_seed())

    def detect(self, **fields: Any) -> messages.Reply:
        """As `AsyncSession.detect`."""
        return self._loop.run(self._session.detect(**fields))

    def remove_object(self, obj_id: int) -> messages.Reply:
        """As `AsyncSession.remove_object`."""
        return self._loop.run(self._session.remove_object(obj_id))

    def reset(self) -> messages.Reply:
        """As `AsyncSession.reset`."""
        return self._loop.run(self._session.reset())

    def set_options(self, **fields: Any) -> messages.Reply:
        """As `AsyncSession.set_options`."""
        return self._loop.run(self._session.set_options(**fields))

    def publish(self, track: Any) -> None:
        """As `AsyncSession.publish` (the track is used on the client's own loop)."""
        self._loop.run(self._session.publish(track))

    def frames(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[messages.Frame]:
        """As `AsyncSession.frames`, blocking."""
        iterator = self._session.frames(limit=limit, timeout=timeout)

        async def next_frame() -> messages.Frame:
            return await iterator.__anext__()

        while True:
            try:
                yield self._loop.run(next_frame())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Close the session's connection (idempotent); the session stays on the server."""
        if not self._closed:
            self._closed = True
            self._loop.run(self._session.close())

    def delete(self) -> None:
        """Delete the session on the server (`AsyncSession.delete`)."""
        self._closed = True
        self._loop.run(self._session.delete())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
