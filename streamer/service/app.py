"""FastAPI app: thin HTTP / websocket routes over the session service.

`create_app(settings)` builds everything; the model is loaded once in the lifespan (in a
thread), one replica per device, each run by that device's `DeviceScheduler`. Routes never run
the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from sam2_video import SAM2Model
from streamer.access import access_of
from streamer.protocol import Error, ErrorCode
from streamer.service.api_docs import offline_docs_app
from streamer.service.auth import BearerAuthMiddleware, chosen_subprotocol
from streamer.service.drain import DrainCollector, Drainer, drain_router
from streamer.service.limits import (
    BodyLimitMiddleware,
    BodyTooLargeError,
    body_too_large_handler,
    validation_error_handler,
)
from streamer.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streamer.service.metrics import compile_status, render_service_metrics
from streamer.service.redact import install_log_redaction
from streamer.service.startup import startup_line
from streamer.sessions import (
    ServiceNotReadyError,
    Session,
    SessionCreate,
    SessionError,
    SessionInfo,
    SessionManager,
    SessionNotFoundError,
)
from streamer.sessions.connection import handle_client_message, hello_message
from streamer.sessions.devices import DeviceSpec, parse_devices
from streamer.sessions.lifecycle import LifecyclePolicy, SessionReaper
from streamer.sessions.schemas import PeerFailureInfo
from streamer.sessions.subscribers import WS_CLOSE_BACKLOG, Subscriber
from streamer.settings import Settings
from streamer.webrtc.failures import PeerFailureCollector
from streamer.webrtc.routes import webrtc_router
from streamer.webrtc.whip import whip_router

logger = logging.getLogger(__name__)

WS_CLOSE_UNKNOWN_SESSION = 4404
WS_CLOSE_SESSION_ENDED = 4410
WS_CLOSE_TRY_AGAIN_LATER = 1013  # the model is still loading
WS_CLOSE_TOO_MANY_WEBSOCKETS = 4430  # max_websockets_per_session reached
REAPER_INTERVAL_S = 1.0  # how often the lifecycle policy looks at the sessions


class TooManyWebsocketsError(SessionError):
    code = "too_many_websockets"
    status = 429


class SessionList(BaseModel):
    sessions: list[SessionInfo]


def load_model(settings: Settings, device: str | None = None) -> SAM2Model:
    """Build the configured model on `device` (default: the settings' `device`; blocking:
    call it in a thread)."""
    from sam2_video.build import build_sam2
    from sam2_video.checkpoints import ensure_checkpoint

    # Never serve random weights: a missing checkpoint is an error that says how to get one.
    checkpoint = ensure_checkpoint(str(settings.model), settings.checkpoint, download=False)
    model = build_sam2(
        settings.model,
        checkpoint=checkpoint,
        device=device or settings.device,
        precision=settings.precision,
    )
    if settings.vos_optimized:
        compile_and_warm_up(model, settings)
    return model


def compile_and_warm_up(model: SAM2Model, settings: Settings) -> None:
    """`vos_optimized`: compile the model's parts for every shape this service can meet
    (object rows up to `max_objects_per_session` x the device's `max_batch`), before it reports
    ready, with the inductor cache on disk. Fallbacks and the warm-up show in /readyz and
    /metrics (`compile_status`)."""
    from sam2_video.compile import compile_model, enable_disk_cache
    from sam2_video.tracking.tracker import StaticShapes
    from sam2_video.warmup import warm_up
    from streamer.sessions.scheduler import DEFAULT_MAX_BATCH

    cache = enable_disk_cache(settings.compile_cache_dir)
    max_batch = settings.max_batch or DEFAULT_MAX_BATCH.get(model.device.type, 1)
    rows = settings.max_objects_per_session * max_batch
    parts = compile_model(model, buckets=StaticShapes().buckets_up_to(rows))
    logger.info(
        "vos_optimized: compiling %s (mode %s, cache %s) for up to %d object rows",
        parts.names,
        parts.mode,
        cache,
        rows,
    )
    warm_up(
        model,
        max_objects=settings.max_objects_per_session,
        max_batch=max_batch,
        time_budget=settings.compile_warmup_seconds,
    )


def load_models(settings: Settings, model: SAM2Model | None = None) -> dict[DeviceSpec, SAM2Model]:
    """One model replica per configured device (`Settings.devices`; blocking). A given `model`
    serves its own device and is copied for the others."""
    specs = parse_devices(settings.devices, default=settings.device)
    models: dict[DeviceSpec, SAM2Model] = {}
    for spec in specs:
        if model is not None:
            models[spec] = model if not models else copy.deepcopy(model).to(spec.torch_device)
        else:
            models[spec] = load_model(settings, spec.torch_device)
    return models


def create_app(
    settings: Settings | None = None,
    *,
    model: SAM2Model | None = None,
    models: dict[DeviceSpec, SAM2Model] | None = None,
) -> FastAPI:
    """The service app. settings: default `Settings()` (environment); model: a loaded model to
    use instead of building one from the settings (tests, embedding; copied to every device of
    `settings.devices`); models: one loaded replica per device."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if models is not None:
            manager = SessionManager(models=models, settings=settings)
        elif model is not None and not settings.devices:
            manager = SessionManager(model=model, settings=settings)
        else:
            replicas = await asyncio.to_thread(load_models, settings, model)
            manager = SessionManager(models=replicas, settings=settings)
        manager.draining = app.state.drain.draining
        manager.start()
        app.state.manager = manager
        install_log_redaction()  # uvicorn has configured its handlers by now
        app.state.reaper = _reaper(app, manager, settings)
        reaping = asyncio.create_task(app.state.reaper.run(REAPER_INTERVAL_S))
        logger.info("%s", startup_line(settings, manager))
        try:
            yield
        finally:
            reaping.cancel()
            await asyncio.gather(reaping, return_exceptions=True)
            await asyncio.to_thread(manager.shutdown)

    # /docs and /redoc are served with local assets (api_docs.py), not from a CDN.
    app = offline_docs_app(title="sam2-stream", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.manager = None
    app.state.drain = Drainer(
        manager=lambda: app.state.manager, grace_seconds=settings.drain_grace_seconds
    )
    app.state.reaper = None
    app.include_router(_http_routes())
    app.include_router(drain_router())
    app.include_router(_ws_routes())
    # WebRTC offer/answer and WHIP ingest; the webrtc router's lifespan owns app.state.webrtc.
    app.include_router(webrtc_router())
    app.include_router(whip_router())

    @app.exception_handler(SessionError)
    async def _session_error(request: Request, exc: SessionError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": str(exc)}, status_code=exc.status)

    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(BodyTooLargeError, body_too_large_handler)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.auth_token is not None:
        admin = settings.admin_token.get_secret_value() if settings.admin_token else None
        if admin == settings.auth_token.get_secret_value():
            logger.warning(
                "admin_token equals auth_token: every client holding the service token is "
                "admin (the single-token model; docs/protocol.md, 'Migrating')"
            )
        app.add_middleware(
            BearerAuthMiddleware,
            token=settings.auth_token.get_secret_value(),
            admin_token=admin,
            static_dir=settings.static_dir,
        )
    # Last, so every route above wins over a file of the same name.
    app.mount("/", StaticFiles(directory=settings.static_dir, html=True), name="static")
    return app


def _reaper(app: FastAPI, manager: SessionManager, settings: Settings) -> SessionReaper:
    def peers(session_id: str) -> int:
        service = getattr(app.state, "webrtc", None)
        return 0 if service is None else len(service.peers(session_id))

    return SessionReaper(
        policy=LifecyclePolicy.from_settings(settings),
        sessions=manager.list,
        delete=manager.delete,
        peers=peers,
    )


def _info(request: Request, session: Session) -> SessionInfo:
    """The session's info with its lifecycle deadline (`expires_in`)."""
    info = session.info()
    reaper: SessionReaper | None = request.app.state.reaper
    update: dict[str, Any] = {}
    if reaper is not None:
        update["expires_in"] = reaper.expires_in(session)
    webrtc = getattr(request.app.state, "webrtc", None)
    if webrtc is not None:
        failures = webrtc.failures.for_session(session.id)
        update["peer_failures"] = [PeerFailureInfo(**f.public()) for f in failures]
    return info.model_copy(update=update) if update else info


def _manager(request: Request | WebSocket) -> SessionManager:
    manager = request.app.state.manager
    if manager is None or not manager.ready:
        raise ServiceNotReadyError("the model is not loaded yet")
    return manager


def _http_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        manager = request.app.state.manager
        draining = request.app.state.drain.draining
        ready = manager is not None and manager.ready and not draining
        body: dict[str, Any] = {"ready": ready, "draining": draining}
        if manager is not None and manager.errors:
            body["errors"] = manager.errors
        if manager is not None and (compiled := compile_status(manager)):
            body["compile"] = compiled
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        collectors: list[Any] = [DrainCollector(request.app.state.drain)]
        webrtc = getattr(request.app.state, "webrtc", None)
        if webrtc is not None:
            collectors.append(PeerFailureCollector(webrtc.failures))
        text = render_service_metrics(_manager(request), *collectors)
        return PlainTextResponse(text, media_type=METRICS_CONTENT_TYPE)

    @router.post("/sessions", status_code=201)
    async def create_session(body: SessionCreate, request: Request) -> SessionInfo:
        manager = _manager(request)
        owner = access_of(request.scope).client
        # Opening a source may block (a camera, a network URL): not on the event loop.
        session = await asyncio.to_thread(manager.create, body, owner=owner)
        tokens = {"token": session.tokens.control, "viewer_token": session.tokens.viewer}
        return _info(request, session).model_copy(update=tokens)

    @router.get("/sessions")
    async def list_sessions(request: Request) -> SessionList:
        return SessionList(sessions=[_info(request, s) for s in _manager(request).list()])

    @router.get("/sessions/{session_id}")
    async def get_session(session_id: str, request: Request) -> SessionInfo:
        return _info(request, _manager(request).get(session_id))

    @router.get("/limits")
    async def limits(request: Request) -> dict[str, Any]:
        """The server's limits and lifecycle TTLs (docs/protocol.md, "Limits")."""
        return public_limits(request.app.state.settings)

    @router.delete("/sessions/{session_id}", status_code=204)
    async def delete_session(session_id: str, request: Request) -> None:
        manager = _manager(request)
        manager.get(session_id)  # 404 before going to a thread
        await asyncio.to_thread(manager.delete, session_id)

    return router


def _ws_routes() -> APIRouter:
    router = APIRouter()

    @router.websocket("/sessions/{session_id}/ws")
    async def session_ws(websocket: WebSocket, session_id: str) -> None:
        await websocket.accept(subprotocol=chosen_subprotocol(websocket.scope))
        settings: Settings = websocket.app.state.settings
        read_only = access_of(websocket.scope).read_only
        try:
            session = _manager(websocket).get(session_id)
            sockets = sum(1 for s in session.subscribers if s.name == "websocket")
            if sockets >= settings.max_websockets_per_session:
                raise TooManyWebsocketsError(
                    f"session {session_id} serves {sockets} websockets; the limit is "
                    f"{settings.max_websockets_per_session}"
                )
            subscriber = session.subscribe(options=settings.default_output, name="websocket")
        except SessionError as exc:
            if isinstance(exc, SessionNotFoundError):
                code, close_code = ErrorCode.UNKNOWN_SESSION, WS_CLOSE_UNKNOWN_SESSION
            elif isinstance(exc, ServiceNotReadyError):
                code, close_code = ErrorCode.NOT_READY, WS_CLOSE_TRY_AGAIN_LATER
            elif isinstance(exc, TooManyWebsocketsError):
                code, close_code = ErrorCode.RATE_LIMITED, WS_CLOSE_TOO_MANY_WEBSOCKETS
            else:
                code, close_code = ErrorCode.SESSION_ENDED, WS_CLOSE_SESSION_ENDED
            await websocket.send_text(Error(code=code, message=str(exc)).model_dump_json())
            await websocket.close(close_code, reason=code.value)
            return
        try:
            await websocket.send_text(
                hello_message(session, settings, subscriber).model_dump_json()
            )
            overflow = asyncio.Event()
            subscriber.on_overflow = overflow.set
            sender = asyncio.create_task(_send_loop(websocket, subscriber))
            receiver = asyncio.create_task(
                _receive_loop(websocket, session, subscriber, read_only=read_only)
            )
            watcher = asyncio.create_task(overflow.wait())
            try:
                done, _ = await asyncio.wait(
                    {sender, receiver, watcher}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (sender, receiver, watcher):
                    task.cancel()
                await asyncio.gather(sender, receiver, watcher, return_exceptions=True)
            if subscriber.overflowed:
                # The client sends but does not read: its replies overflowed (documented).
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close(WS_CLOSE_BACKLOG, reason="client is not reading")
            elif sender in done and sender.exception() is None:
                # The subscriber was closed: the session was deleted or the server stops.
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close(1000, reason="session closed")
        except WebSocketDisconnect:
            pass
        finally:
            session.unsubscribe(subscriber)
            subscriber.close()
            logger.info("session %s: websocket closed", session.id)

    return router


async def _send_loop(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Forward the subscriber's messages to the client until it closes."""
    while True:
        message = await subscriber.get()
        if message is None:
            return
        await websocket.send_text(message.model_dump_json())


async def _receive_loop(
    websocket: WebSocket, session: Session, subscriber: Subscriber, *, read_only: bool
) -> None:
    """Hand each client message to the protocol handler until the client disconnects.
    read_only: a viewer's connection (prompts are refused)."""
    max_bytes = websocket.app.state.settings.max_message_bytes
    while True:
        raw = await websocket.receive()
        if raw["type"] == "websocket.disconnect":
            return
        data = raw.get("text")
        if data is None:
            data = raw.get("bytes") or b""
        handle_client_message(session, subscriber, data, max_bytes=max_bytes, read_only=read_only)


def public_limits(settings: Settings) -> dict[str, Any]:
    """What a client may send and how long idle things live (GET /limits)."""
    names = (
        "max_sessions", "max_objects_per_session", "max_message_bytes", "max_body_bytes",
        "max_mask_pixels", "max_pending_messages", "max_pending_replies", "finished_ttl",
        "idle_ttl", "connect_timeout", "peer_silence_timeout", "source_open_timeout",
        "source_read_timeout", "source_schemes", "max_frame_pixels", "max_frame_side",
        "max_sessions_per_client", "max_websockets_per_session",
    )  # fmt: skip
    body = {name: getattr(settings, name) for name in names}
    body["ws_close_codes"] = {
        "unauthorized": 4401, "unknown_session": WS_CLOSE_UNKNOWN_SESSION,
        "session_ended": WS_CLOSE_SESSION_ENDED, "backlog": WS_CLOSE_BACKLOG,
        "not_ready": WS_CLOSE_TRY_AGAIN_LATER, "too_large": 1009, "forbidden": 4403,
        "too_many_websockets": WS_CLOSE_TOO_MANY_WEBSOCKETS,
    }  # fmt: skip
    return body
