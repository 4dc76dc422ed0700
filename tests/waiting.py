"""The one way the tests wait: poll a condition until it holds, bounded in time.

A wait never passes on time alone: it returns the condition's (truthy) value, or fails the
test with what it was waiting for. Machines are busy, so bounds are generous; a fast machine
returns at the first poll that sees the condition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    what: str = "a condition",
    *,
    step: float = 0.05,
) -> T:
    """Call `predicate` every `step` s until it returns a truthy value, and return that value;
    raise AssertionError (naming `what`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in {timeout:g} s: {what}")
        time.sleep(step)


async def poll_async(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 20.0,
    what: str = "a condition",
    *,
    step: float = 0.05,
) -> T:
    """`poll` for a coroutine function, awaited on the running loop (sleeps with asyncio)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in {timeout:g} s: {what}")
        await asyncio.sleep(step)
