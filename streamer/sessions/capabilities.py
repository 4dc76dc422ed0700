"""Session capabilities: two random tokens minted with each session (docs/protocol.md,
"Authorization").

- `control`: everything on the session (view, prompt, publish, delete).
- `viewer`: read-only (session info, websocket and WebRTC viewing; prompts are refused), for
  AR clients that only watch.

Only the creator gets them (the `POST /sessions` or `POST /whip` response); they never appear
in session info, listings, metrics or logs. Compared in constant time through digests.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

TOKEN_BYTES = 24  # 192 bits, URL- and subprotocol-safe once base64url-encoded


class SessionRole(str, enum.Enum):
    CONTROL = "control"
    VIEWER = "viewer"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()


@dataclass(frozen=True)
class SessionTokens:
    """The capability tokens of one session (`mint()` makes fresh random ones)."""

    control: str = field(repr=False)
    viewer: str = field(repr=False)

    @classmethod
    def mint(cls) -> SessionTokens:
        """A new pair of random, URL-safe tokens (`TOKEN_BYTES` bytes of entropy each)."""
        return cls(
            control=secrets.token_urlsafe(TOKEN_BYTES), viewer=secrets.token_urlsafe(TOKEN_BYTES)
        )

    def role_of(self, token: str | None) -> SessionRole | None:
        """The role `token` grants on this session, or None."""
        if not token:
            return None
        given = _digest(token)
        if hmac.compare_digest(given, _digest(self.control)):
            return SessionRole.CONTROL
        if hmac.compare_digest(given, _digest(self.viewer)):
            return SessionRole.VIEWER
        return None
