"""Sanity checks of an SDP offer before aiortc sees it: aiortc accepts `garbage` or an SDP
without any media section and answers it, which left sessions and peers that could never
connect (issue 9). A refused offer is an `OfferError` (HTTP 400)."""

from __future__ import annotations

from collections.abc import Iterable


def media_kinds(sdp: str) -> list[str]:
    """The media kinds of the `m=` sections, in order ("video", "audio", "application")."""
    return [line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")]


def offer_problem(sdp: str, *, needs: Iterable[str]) -> str | None:
    """Why `sdp` cannot be a usable offer, or None. needs: media kinds of which at least one
    must be offered (WHIP: video; a viewer/publisher offer: video or a data channel)."""
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines or lines[0] != "v=0":
        return "not an SDP offer (it must start with v=0)"
    if not any(line.startswith("o=") for line in lines):
        return "the SDP has no origin (o=) line"
    kinds = media_kinds(sdp)
    wanted = tuple(needs)
    if not any(kind in wanted for kind in kinds):
        offered = ", ".join(kinds) or "no media"
        return f"the SDP offers {offered}; it needs one of: {', '.join(wanted)}"
    return None
