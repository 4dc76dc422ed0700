"""Which sources a client may open: the `SourcePolicy` (settings `source_schemes`,
`media_root`).

A source spec has a *scheme*: "webrtc", "camera" (`/dev/video*`, `camera:N`), the scheme of a
URL (`rtsp`, `udp`, `http`...), or "file" for a plain path (and `file:` URLs). The policy
allows a fixed set of schemes; `http`/`https` are off by default, since they make the server
fetch whatever URL a client names (SSRF). With `media_root` set, files must resolve (symlinks
followed) to a path under it; relative paths are taken from it. Without it, any file the
server's user can read may be opened, as a local `sam2-stream serve` always allowed. Local
files are read through FFmpeg's `file` protocol by single-file demuxers only
(`streamer.ingest.file.LOCAL_DEMUXERS`): a playlist or concat list inside the root could name
files outside it.

Sockets: `tcp`, `udp`, `rtp` and `srt` sources can make FFmpeg *listen* (`?listen=1`,
`mode=listener`, a udp/rtp input binds its port on every interface), which opens a port on the
server to anyone. They are off by default; when enabled, listen modes and wildcard hosts
(`0.0.0.0`, `::`) are still refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from streamer.ingest.base import SourceError

if TYPE_CHECKING:
    from streamer.settings import Settings

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
SOCKET_SCHEMES = frozenset({"tcp", "udp", "rtp", "srt"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "0", "*", "[::]"})
_LISTEN_OPTIONS = {"listen": None, "mode": "listener"}  # option -> refused value (None: any)


class SourcePolicyError(SourceError, ValueError):
    """The policy does not allow this source (the service answers 400 `invalid_source`)."""


def source_scheme(spec: str) -> str:
    """The scheme the policy judges `spec` by (lowercase)."""
    spec = spec.strip()
    if spec == "webrtc":
        return "webrtc"
    if spec.startswith(("/dev/video", "camera:")):
        return "camera"
    match = _SCHEME.match(spec)
    if match is None or len(match.group(1)) == 1:  # "C:\\..." is a path
        return "file"
    return match.group(1).lower()


@dataclass(frozen=True)
class SourcePolicy:
    """allowed: the schemes a client may open; media_root: where files must lie (None:
    anywhere)."""

    allowed: frozenset[str]
    media_root: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SourcePolicy:
        """The policy of `settings.source_schemes` and `settings.media_root`."""
        return cls(
            allowed=frozenset(s.lower() for s in settings.source_schemes),
            media_root=settings.media_root,
        )

    def resolve(self, spec: str) -> str:
        """The spec to open for a client's `spec`; raises SourcePolicyError when refused."""
        scheme = source_scheme(spec)
        if scheme not in self.allowed:
            shown = ", ".join(sorted(self.allowed)) or "none"
            raise SourcePolicyError(f"{scheme!r} sources are not allowed here (allowed: {shown})")
        if scheme in SOCKET_SCHEMES:
            _refuse_listening(spec, scheme)
        if scheme != "file" or self.media_root is None:
            return spec
        path = Path(unquote(urlsplit(spec).path)) if spec.startswith("file:") else Path(spec)
        root = self.media_root.resolve()
        resolved = (path if path.is_absolute() else root / path).resolve()
        if not resolved.is_relative_to(root):
            raise SourcePolicyError("files must lie under the server's media_root")
        return str(resolved)


def _refuse_listening(spec: str, scheme: str) -> None:
    """Raise SourcePolicyError for a socket source that would listen or bind every interface."""
    try:
        parts = urlsplit(spec)
        host = parts.hostname or ""
    except ValueError as exc:
        raise SourcePolicyError(f"cannot parse the {scheme} URL: {exc}") from exc
    if host.strip("[]") in _WILDCARD_HOSTS or host in _WILDCARD_HOSTS:
        raise SourcePolicyError(
            f"{scheme} sources must name a host: a wildcard address would listen on every interface"
        )
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        refused = _LISTEN_OPTIONS.get(name.lower(), False)
        if refused is None or (refused and value.lower() == refused):
            raise SourcePolicyError(f"{scheme} sources may not listen ({name}={value})")
