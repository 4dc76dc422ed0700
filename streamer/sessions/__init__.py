"""Sessions and their scheduling: what a stream is, who drives it, and on which device.

`SessionManager` (manager.py) creates sessions (session.py) and places each on a device whose
scheduler (scheduler.py) runs its frames and prompts (prompts.py); subscribers.py delivers the
results to the event loop; connection.py handles one client's messages on any transport
(websocket, WebRTC data channel). errors.py holds the typed errors, schemas.py the REST models.
"""

from streamer.sessions.errors import (
    DrainingError,
    InvalidSourceError,
    ServiceNotReadyError,
    SessionEndedError,
    SessionError,
    SessionLimitError,
    SessionNotFoundError,
)
from streamer.sessions.manager import SessionManager
from streamer.sessions.schemas import SessionCreate, SessionInfo
from streamer.sessions.session import Command, Session, SessionState, TrackerView

__all__ = [
    "Command",
    "DrainingError",
    "InvalidSourceError",
    "ServiceNotReadyError",
    "Session",
    "SessionCreate",
    "SessionEndedError",
    "SessionError",
    "SessionInfo",
    "SessionLimitError",
    "SessionManager",
    "SessionNotFoundError",
    "SessionState",
    "TrackerView",
]
