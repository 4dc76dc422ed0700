"""Sliced computations: generators that do one slice of work per `next()`."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

_T = TypeVar("_T")


def drain(steps: Generator[None, None, _T]) -> _T:
    """Run a sliced computation (`generate_steps` and the like) to the end; return its value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
