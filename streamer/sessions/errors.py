"""The session layer's typed errors; each carries its machine-readable `code` and the HTTP
`status` the service answers with (body `{"code", "message"}`)."""

from __future__ import annotations


class SessionError(Exception):
    """Base of the service's typed errors; `code` is the machine-readable reason and `status`
    the HTTP status the app answers with (body `{"code", "message"}`)."""

    code = "session_error"
    status = 400


class SessionNotFoundError(SessionError, KeyError):
    code = "unknown_session"
    status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else self.code


class SessionLimitError(SessionError):
    code = "too_many_sessions"
    status = 429


class InvalidSourceError(SessionError, ValueError):
    code = "invalid_source"


class SessionEndedError(SessionError):
    code = "session_ended"
    status = 409


class ServiceNotReadyError(SessionError):
    code = "not_ready"
    status = 503


class DrainingError(SessionError):
    """The instance is draining (streamer.service.drain): it takes no new session; a proxy
    retries the request on another instance."""

    code = "draining"
    status = 503
