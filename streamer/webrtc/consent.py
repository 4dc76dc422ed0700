"""How fast a vanished WebRTC peer is noticed: ICE consent freshness (RFC 7675) timing.

aioice checks consent every `CONSENT_INTERVAL` (5 s) and gives up after `CONSENT_FAILURES` (6)
missed checks: a client that vanishes without closing (browser tab killed, network gone) holds
its peer and its session's slot for about 30 s. A publisher's silence is caught sooner by the
peer's own watchdog (`peer_silence_timeout`); this catches viewers and data-channel-only peers
too. aioice has no option for it, so like `configure_ice_hosts` this sets its module
constants, process-wide.
"""

from __future__ import annotations

import math

import aioice.ice

CONSENT_INTERVAL_S = (
    1  # seconds (aioice keeps an int)  # one STUN binding request per second per peer: negligible
)


def configure_consent(expiry_s: float) -> None:
    """Let consent expire after about `expiry_s` seconds without answers (>= 2 checks);
    0 restores aioice's defaults (30 s)."""
    if expiry_s <= 0:
        aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES = 5, 6
        return
    aioice.ice.CONSENT_INTERVAL = CONSENT_INTERVAL_S
    aioice.ice.CONSENT_FAILURES = max(2, math.ceil(expiry_s / CONSENT_INTERVAL_S))
