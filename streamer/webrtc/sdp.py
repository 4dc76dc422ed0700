"""Sanity checks of an SDP offer before aiortc sees it: aiortc accepts `garbage` or an SDP
without any media section and answers it, which left sessions and peers that could never
connect (issue 9). A refused offer is an `OfferError` (HTTP 400).

The checks also bound what aiortc parses on the event loop (issue 19): an offer of 563
`m=video` sections (64 KiB, under the size cap) cost ~1 s of loop time, and ten at once froze
every stream. Counting lines is linear and cheap; the offer is refused before aiortc parses it
when it has more media sections, codecs per section or lines than a real client sends
(Chromium's offer of audio, video and a data channel: 3 sections, 23 video codecs, 171
lines). The largest offer accepted costs aiortc ~50 ms of loop time (Xeon, 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_MEDIA_SECTIONS = 4
MAX_CODECS_PER_SECTION = 48  # rtpmap lines (payload types) of one m= section
MAX_LINES = 600
# Video codecs aiortc can decode (RTX, RED and FEC ride along with them).
SUPPORTED_VIDEO_CODECS = frozenset({"vp8", "h264"})


def media_kinds(sdp: str) -> list[str]:
    """The media kinds of the `m=` sections, in order ("video", "audio", "application")."""
    return [line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")]


def _video_codecs(lines: list[str]) -> list[str]:
    """Codec names (lowercase) of the `a=rtpmap` lines of every video section."""
    codecs, in_video = [], False
    for line in lines:
        if line.startswith("m="):
            in_video = line[2:].startswith("video")
        elif in_video and line.startswith("a=rtpmap:"):
            _, _, encoding = line.partition(" ")
            codecs.append(encoding.split("/", 1)[0].strip().lower())
    return codecs


def _size_problem(lines: list[str]) -> str | None:
    if len(lines) > MAX_LINES:
        return f"the SDP has {len(lines)} lines; at most {MAX_LINES} are accepted"
    sections = codecs = 0
    for line in lines:
        if line.startswith("m="):
            sections += 1
            codecs = 0
            if sections > MAX_MEDIA_SECTIONS:
                return f"the SDP has more than {MAX_MEDIA_SECTIONS} media sections"
        elif line.startswith("a=rtpmap:"):
            codecs += 1
            if codecs > MAX_CODECS_PER_SECTION:
                return f"a media section lists more than {MAX_CODECS_PER_SECTION} codecs"
    return None


def offer_problem(sdp: str, *, needs: Iterable[str]) -> str | None:
    """Why `sdp` cannot be a usable offer, or None. needs: media kinds of which at least one
    must be offered (WHIP: video; a viewer/publisher offer: video or a data channel)."""
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines or lines[0] != "v=0":
        return "not an SDP offer (it must start with v=0)"
    problem = _size_problem(lines)
    if problem is not None:
        return problem
    if not any(line.startswith("o=") for line in lines):
        return "the SDP has no origin (o=) line"
    kinds = media_kinds(sdp)
    wanted = tuple(needs)
    if not any(kind in wanted for kind in kinds):
        offered = ", ".join(kinds) or "no media"
        return f"the SDP offers {offered}; it needs one of: {', '.join(wanted)}"
    codecs = _video_codecs(lines)
    if codecs and not SUPPORTED_VIDEO_CODECS.intersection(codecs):
        shown = ", ".join(sorted(set(codecs))[:8])
        supported = ", ".join(sorted(c.upper() for c in SUPPORTED_VIDEO_CODECS))
        return f"no supported video codec in the offer (offered: {shown}; supported: {supported})"
    return None
