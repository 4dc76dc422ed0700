"""Session ids that say which instance owns the session: `<instance>-<12 hex digits>`.

Behind a proxy, every session-scoped URL (`/sessions/{id}/...`) carries the id, so the proxy
can send each request and the websocket of a session to its owner by matching the prefix
(deploy/nginx, docs/deploy.md), with no router process and no shared state. Creation
(`POST /sessions`, `POST /whip`) goes to any instance; the instance that creates a session
names it.
"""

from __future__ import annotations

import re
import secrets
import socket

ID_HEX_DIGITS = 12
# A DNS label (a Kubernetes pod name is one): lowercase letters, digits and '-', at most 63.
INSTANCE_NAME_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$"
_SESSION_ID = re.compile(rf"^(?:(?P<owner>[a-z0-9-]+)-)?(?P<hex>[0-9a-f]{{{ID_HEX_DIGITS}}})$")


def default_instance_name() -> str:
    """This host's name as a DNS label: the first label, lowercased, other characters as
    '-' ("" when nothing usable is left). On Kubernetes the host name is the pod name."""
    label = socket.gethostname().split(".")[0].lower()
    label = re.sub(r"[^a-z0-9-]+", "-", label).strip("-")[:63].strip("-")
    return label


def mint_session_id(instance_name: str) -> str:
    """A new random session id, prefixed with `instance_name` when it is not empty."""
    suffix = secrets.token_hex(ID_HEX_DIGITS // 2)
    return f"{instance_name}-{suffix}" if instance_name else suffix


def session_owner(session_id: str) -> str | None:
    """The instance name an id was minted by ("" for an unprefixed id), None for an id this
    scheme did not mint."""
    match = _SESSION_ID.match(session_id)
    if match is None:
        return None
    return match.group("owner") or ""
