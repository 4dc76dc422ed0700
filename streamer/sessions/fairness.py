"""Scheduling policies of a device: fair sharing of device time, and rate limits.

`FairShare` is the policy every device scheduler uses to decide whose work runs next: virtual-
time fair queuing over *measured* device seconds (also called least-attained-service). Each
session has a virtual time, the device seconds charged to it so far; the session with work
and the smallest virtual time goes first. A batched frame step charges its measured cost to
the sessions in the batch (split by their rows), and a slice of a long command (automatic mask
generation) charges its whole cost to the session that asked. So a session that asks for a lot
of work gets it only while others are not owed more, and two busy sessions converge to half the
device each, whatever their step sizes. A session that was idle rejoins at the current virtual
clock (minus one slice of credit), so idling never banks a burst.

`TokenBucket` limits how often a session may start expensive commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class FairShare(Generic[K]):
    """Virtual-time fair queuing of device seconds among keys (sessions).

    rejoin_credit: seconds of head start an idle key keeps when it becomes busy again.
    Thread-safe; the scheduler thread charges, other threads may read `virtual_time`.
    """

    def __init__(self, *, rejoin_credit: float = 0.05) -> None:
        self.rejoin_credit = rejoin_credit
        self._vtime: dict[K, float] = {}
        self._clock = 0.0  # virtual time of the most recently served key
        self._lock = threading.Lock()

    def order(self, keys: Iterable[K]) -> list[K]:
        """`keys` (the ones with work now), most owed first; ties keep the given order."""
        keys = list(keys)
        with self._lock:
            for key in keys:
                self._vtime[key] = self._rejoined(key)
            return sorted(keys, key=lambda k: self._vtime[k])

    def charge(self, key: K, seconds: float) -> None:
        """Add `seconds` of device time to `key` (after its work ran)."""
        with self._lock:
            vtime = self._rejoined(key)
            self._vtime[key] = vtime + max(0.0, seconds)
            self._clock = max(self._clock, vtime)

    def _rejoined(self, key: K) -> float:
        """`key`'s virtual time, raised to the clock minus the credit (call with the lock):
        new or long-idle keys start near the clock instead of far behind it."""
        floor = self._clock - self.rejoin_credit
        return max(self._vtime.get(key, floor), floor)

    def virtual_time(self, key: K) -> float:
        """Device seconds charged to `key` (the clock for a key never charged)."""
        with self._lock:
            return self._vtime.get(key, self._clock)

    def keys(self) -> set[K]:
        """The keys with a virtual time."""
        with self._lock:
            return set(self._vtime)

    def forget(self, key: K) -> None:
        """Drop `key` (a session that ended)."""
        with self._lock:
            self._vtime.pop(key, None)


def by_client(sessions: Sequence[T], owner: Callable[[T], K], clients: FairShare[K]) -> list[T]:
    """`sessions` (already in per-session fair order) regrouped so the most owed *client*
    comes first, each client's sessions keeping their order: a client with 20 sessions gets
    the device time of one client, not of 20 (charge `clients` by owner as well)."""
    rank = {key: i for i, key in enumerate(clients.order(dict.fromkeys(map(owner, sessions))))}
    return sorted(sessions, key=lambda session: rank[owner(session)])


class TokenBucket:
    """At most `burst` commands at once, refilled at `per_minute` per minute.

    `take()` returns 0.0 when a command may run (and uses a token), otherwise the seconds to
    wait before one will be available (the `retry_after` of a `rate_limited` error).
    """

    def __init__(
        self, *, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError(f"need per_minute > 0 and burst >= 1, got {per_minute}, {burst}")
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 and a token used if a command may run now, else the seconds until one may."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate
