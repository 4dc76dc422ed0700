"""Credentials in source URLs (`rtsp://user:password@camera/...`) never leave the server: every
URL shown in a response, a `hello`, an error or a log line goes through `redact_url` or
`redact_credentials` (which also rewrites FFmpeg's own messages, which repeat the URL)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
# scheme://user:password@ or scheme://token@ in any text (the userinfo of a URL).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s'\"]+)@")


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, fit for logs and status pages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable netloc (bad port, brackets): redact by pattern
        return redact_credentials(url)
    if password is None:
        return redact_credentials(url)
    netloc = parts.netloc.replace(f":{password}@", f":{REDACTED}@", 1)
    return redact_credentials(urlunsplit(parts._replace(netloc=netloc)))


def _userinfo(match: re.Match[str]) -> str:
    user, sep, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user}:{REDACTED}@" if sep else f"{match.group(1)}{REDACTED}@"


def redact_credentials(text: str) -> str:
    """`text` with the password (or lone token) of every URL in it replaced by `***`."""
    return _USERINFO.sub(_userinfo, text)
