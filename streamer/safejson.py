"""Bounded JSON decoding for client messages, and clipping of client text echoed in errors.

`json.loads` on hostile input can fail in ways that are not `JSONDecodeError` (an integer of
4,301+ digits raises a plain ValueError, nesting 1,000 deep a RecursionError) and accepts
`NaN` / `Infinity` / `1e999`. `load_bounded` checks the nesting depth first (vectorised, no
recursion), caps the length of every number, rejects non-finite numbers, and raises only
`JsonLimitError` (a ValueError) with a short message that echoes at most `MAX_ECHO_BYTES` of
the input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

# Deepest nesting of arrays/objects a message may have (the protocol needs 3).
MAX_JSON_DEPTH = 32
# Longest number literal (characters): int64 has 19 digits, a float repr at most ~24.
MAX_NUMBER_CHARS = 32
# Client input quoted in an error message is cut to about this many bytes.
MAX_ECHO_BYTES = 100

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


class JsonLimitError(ValueError):
    """The text is not JSON, or breaks one of the limits above (the message says which)."""


def clip(value: object, limit: int = MAX_ECHO_BYTES) -> str:
    """`repr(value)` cut to about `limit` bytes (with "..." when cut): safe to echo."""
    text = repr(value)
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore") + "..."


def nesting_depth(text: str) -> int:
    """Deepest `[`/`{` nesting of `text`, brackets inside strings not counted (O(n), no
    recursion)."""
    outside = _STRING.sub('""', text)
    codes = np.frombuffer(outside.encode("utf-8", errors="replace"), dtype=np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int32) - np.isin(codes, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number has {len(literal)} digits; at most {MAX_NUMBER_CHARS}")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number has {len(literal)} characters; at most {MAX_NUMBER_CHARS}")
    value = float(literal)
    if not math.isfinite(value):
        raise JsonLimitError(f"number {clip(literal)} is not finite")
    return value


def _parse_constant(name: str) -> float:
    raise JsonLimitError(f"{name} is not allowed: numbers must be finite")


def load_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode one JSON document within the limits; raises JsonLimitError."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonLimitError(f"not UTF-8 text (byte {exc.start})") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonLimitError(f"JSON nested {depth} deep; at most {max_depth}")
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except JsonLimitError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonLimitError(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:  # belt and braces: never let these escape
        raise JsonLimitError(f"not acceptable JSON: {clip(str(exc))}") from None
