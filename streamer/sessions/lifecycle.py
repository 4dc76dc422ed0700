"""Session lifecycle with TTLs: which sessions give their slot back, and when.

`LifecyclePolicy` is the named policy (settings `finished_ttl`, `idle_ttl`; 0 disables one):

- a session is *in use* while it has a subscriber (websocket, WebRTC viewer) or a WebRTC /
  WHIP peer; the reaper never closes a session in use;
- a finished or failed session is closed `finished_ttl` seconds after it ended and its last
  client left (whichever is later), so a client still reading it is not cut off;
- any other session is closed after `idle_ttl` seconds without a client (one created and
  never connected to, or whose last client vanished).

`SessionReaper` applies it: `observe()` looks at every session once (it keeps when each
became idle / ended, so `Session` needs no extra fields) and returns the ids that expired;
`run()` does that every `interval` seconds on the event loop and deletes them in a thread.
WebRTC peers that never connect are closed by the peer itself (`connect_timeout`, see
`streamer.webrtc.peer`); a WHIP session then goes with its peer, any other becomes idle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamer.sessions.errors import SessionNotFoundError
from streamer.sessions.session import Session, SessionState
from streamer.settings import Settings

logger = logging.getLogger(__name__)

_ENDED = (SessionState.FINISHED, SessionState.FAILED)


@dataclass(frozen=True)
class LifecyclePolicy:
    """When an unused session is closed. Seconds; 0 means never for that case."""

    finished_ttl: float = 60.0
    idle_ttl: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecyclePolicy:
        """The policy of `settings.finished_ttl` and `settings.idle_ttl`."""
        return cls(finished_ttl=settings.finished_ttl, idle_ttl=settings.idle_ttl)

    def deadline(self, *, idle_since: float | None, ended_at: float | None) -> float | None:
        """The (monotonic) time at which to close a session; None: not while it is in use
        (idle_since None) or when the TTL that applies is 0."""
        if idle_since is None:
            return None
        if ended_at is not None:
            return max(idle_since, ended_at) + self.finished_ttl if self.finished_ttl else None
        return idle_since + self.idle_ttl if self.idle_ttl else None


class SessionReaper:
    """Closes the sessions `policy` says have expired.

    sessions: the open sessions (e.g. `manager.list`); delete: closes one by id (blocking,
    run in a thread); peers: how many WebRTC/WHIP peers a session has; clock: monotonic time.
    """

    def __init__(
        self,
        *,
        policy: LifecyclePolicy,
        sessions: Callable[[], list[Session]],
        delete: Callable[[str], None],
        peers: Callable[[str], int] = lambda session_id: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._sessions = sessions
        self._delete = delete
        self._peers = peers
        self._clock = clock
        self._idle_since: dict[str, float] = {}
        self._ended_at: dict[str, float] = {}
        self.reaped = 0

    def observe(self) -> list[str]:
        """Look at every session once; returns the ids whose deadline has passed."""
        now = self._clock()
        expired, seen = [], set()
        for session in self._sessions():
            seen.add(session.id)
            deadline = self._deadline(session, now)
            if deadline is not None and now >= deadline:
                expired.append(session.id)
        for table in (self._idle_since, self._ended_at):
            for sid in [s for s in table if s not in seen]:
                del table[sid]
        return expired

    def _deadline(self, session: Session, now: float) -> float | None:
        """Update what is known of `session` (idle since, ended at) and return its deadline."""
        sid = session.id
        if session.subscribers or self._peers(sid) > 0:
            self._idle_since.pop(sid, None)
        else:
            self._idle_since.setdefault(sid, now)
        if session.state in _ENDED:
            self._ended_at.setdefault(sid, now)
        return self.policy.deadline(
            idle_since=self._idle_since.get(sid), ended_at=self._ended_at.get(sid)
        )

    def expires_in(self, session: Session) -> float | None:
        """Seconds until `session` is closed, None: not scheduled (in use, or its TTL is 0).
        Evaluated now, so it agrees with the session's current state."""
        now = self._clock()
        deadline = self._deadline(session, now)
        return None if deadline is None else max(0.0, deadline - now)

    def reap(self) -> list[str]:
        """`observe()`, then close what expired (blocking: call it in a thread)."""
        expired = self.observe()
        for sid in expired:
            self._close(sid)
        return expired

    def _close(self, session_id: str) -> None:
        try:
            self._delete(session_id)
        except SessionNotFoundError:
            return
        self.reaped += 1
        logger.info("session %s: closed by the lifecycle policy (%s)", session_id, self.policy)

    async def run(self, interval: float = 1.0) -> None:
        """Reap every `interval` seconds until cancelled (the app's lifespan runs this):
        observes on the loop, closes in a thread (closing joins the source, bounded)."""
        while True:
            try:
                for sid in self.observe():
                    await asyncio.to_thread(self._close, sid)
            except Exception:
                logger.exception("session reaper pass failed")
            await asyncio.sleep(interval)
