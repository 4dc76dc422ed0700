"""`SessionManager`: creates, lists, finds and deletes sessions, and owns the schedulers."""

from __future__ import annotations

import logging
import threading
import uuid

from sam2_video.auto_seed import AutoSeedOptions
from sam2_video.modeling.sam2 import SAM2Model
from sam2_video.streaming import SessionOptions, StreamingSession
from streamer.ingest import open_source
from streamer.ingest import source_kind as classify_source
from streamer.ingest.policy import SourcePolicy
from streamer.safejson import clip
from streamer.sessions.errors import (
    InvalidSourceError,
    ServiceNotReadyError,
    SessionLimitError,
    SessionNotFoundError,
)
from streamer.sessions.scheduler import InferenceWorker
from streamer.sessions.schemas import SessionCreate
from streamer.sessions.session import Session
from streamer.settings import Settings

logger = logging.getLogger(__name__)


class SessionManager:
    """Creates, lists, finds and deletes sessions; owns the inference worker.

    model: the loaded SAM 2 model (one per device, shared by every session).
    settings: limits (`max_sessions`, `max_objects_per_session`) and defaults.
    Call `start()` once, and `shutdown()` at the end (closes every session, stops the worker).
    """

    def __init__(self, *, model: SAM2Model, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self.sessions_created = 0
        self.worker = InferenceWorker(model=model, sessions=self.list, settings=settings)

    def start(self) -> None:
        self.worker.start()

    @property
    def ready(self) -> bool:
        return self.worker.alive

    def create(self, request: SessionCreate | str) -> Session:
        """Open and start a session's source; raises SessionLimitError, InvalidSourceError,
        ServiceNotReadyError."""
        if isinstance(request, str):
            request = SessionCreate(source=request)
        if not self.worker.alive:
            raise ServiceNotReadyError("the inference worker is not running")
        max_objects = min(
            request.max_objects or self.settings.max_objects_per_session,
            self.settings.max_objects_per_session,
        )
        session_id = uuid.uuid4().hex[:12]
        with self._lock:
            if len(self._sessions) >= self.settings.max_sessions:
                raise SessionLimitError(
                    f"{len(self._sessions)} sessions open; the limit is {self.settings.max_sessions}"
                )
            # Reserve the slot before the (possibly slow) source start.
            self._sessions[session_id] = None  # type: ignore[assignment]
        try:
            options = {}
            if classify_source(request.source) == "file" and request.max_frames is not None:
                options["max_frames"] = request.max_frames
            try:
                spec = SourcePolicy.from_settings(self.settings).resolve(request.source)
                source = open_source(
                    spec,
                    pace=request.paced,
                    open_timeout=self.settings.source_open_timeout,
                    read_timeout=self.settings.source_read_timeout,
                    **options,
                )
            except (ValueError, ImportError, OSError) as exc:
                raise InvalidSourceError(
                    f"cannot open source {clip(request.source)}: {exc}"
                ) from exc
            seeding = None
            if request.auto_seed:
                seeding = AutoSeedOptions(
                    points_per_side=self.settings.auto_seed_points_per_side,
                    max_objects=self.settings.auto_seed_max_objects,
                )
            tracker = StreamingSession(
                self.model,
                SessionOptions(
                    max_objects=max_objects,
                    non_overlapping=request.non_overlapping,
                    auto_seed=seeding,
                    # Fixed shapes keep the compiled graphs from recompiling frame to frame.
                    static_shapes=self.settings.vos_optimized,
                ),
            )
            session = Session(
                session_id=session_id,
                request=request,
                source=source,
                tracker=tracker,
                settings=self.settings,
                wake_worker=self.worker.wake,
            )
            source.slot.add_listener(self.worker.wake_event)
            if not session._defer_source:
                source.start()
        except BaseException:
            with self._lock:
                self._sessions.pop(session_id, None)
            raise
        with self._lock:
            self._sessions[session_id] = session
            self.sessions_created += 1
        logger.info("session %s: %s source %s", session_id, session.kind, request.source)
        self.worker.wake()
        return session

    def list(self) -> list[Session]:
        with self._lock:
            return [s for s in self._sessions.values() if s is not None]

    def get(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFoundError(f"no session {session_id!r}")
        return session

    def delete(self, session_id: str) -> None:
        """Close and forget a session (blocks while its source thread is joined, bounded)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise SessionNotFoundError(f"no session {session_id!r}")
            del self._sessions[session_id]
        session.close()

    def shutdown(self, timeout: float = 10.0) -> None:
        for session in self.list():
            try:
                self.delete(session.id)
            except SessionNotFoundError:
                pass
        self.worker.stop(timeout)
