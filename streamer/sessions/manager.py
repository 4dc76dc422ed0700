"""`SessionManager`: creates, lists, finds and deletes sessions, and owns the schedulers."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sam2_video import SAM2Model, SessionOptions, StreamingSession
from sam2_video.predictors.auto_seed import AutoSeedOptions
from streamer.ingest import FrameLimits, open_source
from streamer.ingest import source_kind as classify_source
from streamer.ingest.base import SourceError
from streamer.ingest.credentials import redact_credentials, redact_url
from streamer.ingest.file import is_url, probe_video
from streamer.ingest.policy import SourcePolicy
from streamer.ingest.slot import DecodeBudget
from streamer.safejson import clip
from streamer.session_ids import mint_session_id
from streamer.sessions.devices import DeviceLoad, DeviceSpec, least_loaded
from streamer.sessions.errors import (
    DrainingError,
    InvalidSourceError,
    ServiceNotReadyError,
    SessionLimitError,
    SessionNotFoundError,
)
from streamer.sessions.fairness import TokenBucket
from streamer.sessions.scheduler import DeviceScheduler
from streamer.sessions.schemas import SessionCreate
from streamer.sessions.session import Session
from streamer.settings import Settings

logger = logging.getLogger(__name__)


class SessionManager:
    """Creates, lists, finds and deletes sessions; owns one `DeviceScheduler` per device.

    models: one loaded SAM 2 model replica per device label (`DeviceSpec.label`, e.g.
        {"cuda:0": m0, "cuda:1": m1}); `model` is the one-device shorthand. Every session of a
        device shares its replica.
    settings: limits (`max_sessions`, `max_objects_per_session`) and defaults.
    A new session goes to the least-loaded live device (`devices.least_loaded`).
    Call `start()` once, and `shutdown()` at the end (closes every session, stops schedulers).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        model: SAM2Model | None = None,
        models: Mapping[DeviceSpec, SAM2Model] | None = None,
    ) -> None:
        if model is not None and models is None:
            device = next(model.parameters()).device
            label = f"{device.type}:{device.index or 0}"
            models = {DeviceSpec(label, str(device)): model}
        elif models is None or model is not None:
            raise ValueError("give either model or models")
        self.settings = settings
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._reserved: dict[str, str] = {}  # session id -> device, while being created
        self._reserved_owners: dict[str, str] = {}  # session id -> owner, while being created
        self._client_commands: dict[str, TokenBucket] = {}  # owner -> its shared rate limit
        self.sessions_created = 0
        self.schedulers: dict[str, DeviceScheduler] = {
            spec.label: DeviceScheduler(
                spec=spec,
                model=replica,
                sessions=functools.partial(self._placed_on, spec.label),
                settings=settings,
            )
            for spec, replica in models.items()
        }
        self.decode_budget = DecodeBudget(settings.decode_ahead_bytes)
        # Set by the drain (streamer.service.drain): create() refuses new sessions.
        self.draining = False

    def start(self) -> None:
        """Start every device's scheduler thread."""
        for scheduler in self.schedulers.values():
            scheduler.start()

    @property
    def ready(self) -> bool:
        """True while at least one device's scheduler runs."""
        return any(s.alive for s in self.schedulers.values())

    @property
    def errors(self) -> dict[str, str]:
        """Crash messages of schedulers that stopped working, by device label."""
        return {label: s.error for label, s in self.schedulers.items() if s.error}

    def _placed_on(self, label: str) -> list[Session]:
        with self._lock:
            return [s for s in self._sessions.values() if s is not None and s.device == label]

    def _place_locked(self) -> DeviceScheduler:
        """The device for a new session (call with the lock held); counts reserved slots."""
        loads = []
        for label, scheduler in self.schedulers.items():
            sessions = [s for s in self._sessions.values() if s is not None and s.device == label]
            reserved = sum(1 for r in self._reserved.values() if r == label)
            measured = [m for m in (s.measured_load for s in sessions) if m is not None]
            count = len(sessions) + reserved
            loads.append(DeviceLoad(label, scheduler.alive, sum(measured), len(measured), count))
        chosen = least_loaded(loads, unmeasured_cost=1.0)
        if chosen is None:
            raise ServiceNotReadyError("no device's scheduler is running")
        return self.schedulers[chosen]

    def create(self, request: SessionCreate | str, *, owner: str = "local") -> Session:
        """Open and start a session's source; raises SessionLimitError, InvalidSourceError,
        ServiceNotReadyError, DrainingError.

        owner: the client creating it (address or credential key): it may hold at most
        `max_sessions_per_client` sessions, whose expensive commands share one rate limit.
        """
        if self.draining:
            raise DrainingError("this instance is draining; open the session on another one")
        if isinstance(request, str):
            request = SessionCreate(source=request)
        max_objects = min(
            request.max_objects or self.settings.max_objects_per_session,
            self.settings.max_objects_per_session,
        )
        session_id = mint_session_id(self.settings.instance_name)
        with self._lock:
            if len(self._sessions) >= self.settings.max_sessions:
                open_, limit = len(self._sessions), self.settings.max_sessions
                raise SessionLimitError(f"{open_} sessions open; the limit is {limit}")
            owned = sum(1 for s in self._sessions.values() if s is not None and s.owner == owner)
            owned += sum(1 for o in self._reserved_owners.values() if o == owner)
            per_client = self.settings.max_sessions_per_client
            if per_client is not None and owned >= per_client:
                raise SessionLimitError(
                    f"this client has {owned} sessions open; the limit per client is {per_client}"
                )
            scheduler = self._place_locked()
            self._reserved_owners[session_id] = owner
            client_commands = self._client_commands.setdefault(
                owner,
                TokenBucket(
                    per_minute=self.settings.client_expensive_commands_per_minute,
                    burst=self.settings.client_expensive_commands_burst,
                ),
            )
            # Reserve the slot (and its device) before the (possibly slow) source start.
            self._sessions[session_id] = None  # type: ignore[assignment]
            self._reserved[session_id] = scheduler.label
        try:
            options: dict[str, Any] = {}
            if classify_source(request.source) == "file":
                options["budget"] = self.decode_budget  # frames decoded ahead, all sessions
                if request.max_frames is not None:
                    options["max_frames"] = request.max_frames
            try:
                spec = SourcePolicy.from_settings(self.settings).resolve(request.source)
                if (
                    classify_source(spec) == "file"
                    and not is_url(spec)
                    and not Path(spec).is_file()
                ):
                    # Said now (400), not by a session that fails a moment later.
                    raise FileNotFoundError(f"video file not found: {spec}")
                limits = FrameLimits.from_settings(self.settings)
                if classify_source(spec) == "file" and not is_url(spec):
                    # Oversized frames and multi-file formats are refused now (400).
                    probe_video(spec, limits)
                source = open_source(
                    spec,
                    pace=request.paced,
                    open_timeout=self.settings.source_open_timeout,
                    read_timeout=self.settings.source_read_timeout,
                    frame_limits=limits,
                    **options,
                )
            except (ValueError, ImportError, OSError, SourceError) as exc:
                raise InvalidSourceError(
                    redact_credentials(
                        f"cannot open source {clip(redact_url(request.source))}: {exc}"
                    )
                ) from exc
            seeding = None
            if request.auto_seed:
                seeding = AutoSeedOptions(
                    points_per_side=self.settings.auto_seed_points_per_side,
                    max_objects=self.settings.auto_seed_max_objects,
                )
            stream = StreamingSession(
                scheduler.model,
                SessionOptions(
                    max_objects=max_objects,
                    non_overlapping=request.non_overlapping,
                    memory=request.memory,
                    auto_seed=seeding,
                    # Fixed shapes keep the compiled graphs from recompiling frame to frame.
                    static_shapes=self.settings.vos_optimized,
                ),
            )
            session = Session(
                session_id=session_id,
                request=request,
                source=source,
                stream=stream,
                settings=self.settings,
                wake_worker=scheduler.wake,
                device=scheduler.label,
                owner=owner,
                client_commands=client_commands,
            )
            source.slot.add_listener(scheduler.wake_event)
            if not session.defer_source:
                source.start()
        except BaseException:
            with self._lock:
                self._sessions.pop(session_id, None)
                self._reserved.pop(session_id, None)
                self._reserved_owners.pop(session_id, None)
            raise
        with self._lock:
            self._sessions[session_id] = session
            self._reserved.pop(session_id, None)
            self._reserved_owners.pop(session_id, None)
            self.sessions_created += 1
        logger.info(
            "session %s: %s source %s on %s",
            session_id,
            session.kind,
            redact_url(request.source),
            session.device,
        )
        scheduler.wake()
        return session

    def list(self) -> list[Session]:
        """The open sessions (a copy; sessions still being created are left out)."""
        with self._lock:
            return [s for s in self._sessions.values() if s is not None]

    def get(self, session_id: str) -> Session:
        """The session `session_id`; raises SessionNotFoundError."""
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
            if not any(s is not None and s.owner == session.owner for s in self._sessions.values()):
                self._client_commands.pop(session.owner, None)
        session.close()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Delete every session, then stop the schedulers (each joined for at most `timeout` s)."""
        for session in self.list():
            try:
                self.delete(session.id)
            except SessionNotFoundError:
                pass
        for scheduler in self.schedulers.values():
            scheduler.stop(timeout)
