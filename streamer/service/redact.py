"""Keep secrets out of logs: the bearer token travels in `?token=` query strings (browsers
cannot set headers on websockets), which uvicorn's access log and websocket lines print.

`RedactingFilter` rewrites every record it sees: query strings in uvicorn's access log are
dropped entirely (`/path?<redacted>`), and anywhere else the values of `token=` style
parameters, `Bearer` credentials and the passwords of URLs (FFmpeg repeats a source's URL in
its own messages) become `***`. `install_log_redaction()` attaches it to
the handlers of the root and uvicorn loggers, so it applies whatever logger a line comes from.
"""

from __future__ import annotations

import logging
import re

from streamer.ingest.credentials import redact_credentials

REDACTED = "***"
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:token|access_token|auth|password|key)=)[^&\s\"']*")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_QUERY = re.compile(r"(\?)[^\s\"]*")
_ACCESS_LOGGERS = ("uvicorn.access",)


def redact(text: str) -> str:
    """`text` with token-like query values, bearer credentials and URL passwords
    (`rtsp://user:***@host`) replaced by `***`."""
    text = _BEARER.sub(rf"\g<1>{REDACTED}", _SECRET_PARAM.sub(rf"\g<1>{REDACTED}", text))
    return redact_credentials(text)


def redact_query(text: str) -> str:
    """`text` with every query string cut to `?<redacted>` (for access-log lines)."""
    return _QUERY.sub(r"\g<1><redacted>", text)


class RedactingFilter(logging.Filter):
    """A handler/logger filter that redacts each record's message and string arguments.

    The arguments are rewritten one by one (uvicorn's access formatter reads them by
    position); a record whose formatted text still shows a secret is collapsed to that text,
    redacted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact secrets in the record's message and arguments in place; keep the record."""
        clean = redact_query if record.name in _ACCESS_LOGGERS else redact
        if isinstance(record.msg, str):
            record.msg = clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                clean(redact(arg)) if isinstance(arg, str) else arg for arg in record.args
            )
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to break
            return True
        if redact(message) != message and record.name not in _ACCESS_LOGGERS:
            record.msg, record.args = redact(message), None
        return True


_FILTER = RedactingFilter()


def install_log_redaction(*logger_names: str) -> None:
    """Attach the filter to the handlers of the root logger and of `logger_names` (default:
    uvicorn's), and to those loggers themselves (for records handled without propagation).
    Idempotent; call it again after logging is reconfigured."""
    names = logger_names or ("uvicorn", "uvicorn.error", "uvicorn.access")
    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in names)]:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
