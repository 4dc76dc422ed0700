"""The asyncio client: HTTP (httpx) for sessions, one websocket per session for prompts and
masklets (websockets), WHIP (aiortc) to publish video into a "webrtc" session."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from pycocotools import mask as mask_api
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamer.client import messages
from streamer.client.errors import (
    AuthError,
    ClientError,
    ForbiddenError,
    NotFoundError,
    RequestError,
    SessionEndedError,
    http_error,
)
from streamer.client.whip import WhipPublisher

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0  # one reply; a prompt waits behind the model's current step
MAX_QUEUED_FRAMES = 256  # frames kept for a slow reader; older ones are dropped (counted)
_END = object()
_WS_CLOSE_ERRORS = {4401: AuthError, 4403: ForbiddenError, 4404: NotFoundError}
_SESSION_PATH = re.compile(r"^/sessions/([^/]+)")


class AsyncClient:
    """A sam2-stream server at `base_url` ("http://host:8000"); `token`: its service (or
    admin) bearer token. verify: TLS verification for https (True, False, or an
    `ssl.SSLContext`). Requests on a session's paths carry that session's own capability
    token when the client has one (docs/protocol.md, "Authorization")."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify: Any = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.verify = verify
        self._session_tokens: dict[str, str] = {}  # session id -> its capability token
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, verify=verify)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connection pool (sessions close their own websockets)."""
        await self._http.aclose()

    def use_session_token(self, session_id: str, token: str | None) -> None:
        """Use `token` (the session's control or viewer token) for session `session_id` from
        now on; None forgets it (the service token is used again)."""
        if token:
            self._session_tokens[session_id] = token
        else:
            self._session_tokens.pop(session_id, None)

    def token_for(self, path: str) -> str | None:
        """The credential for `path` (or a URL): the session's own token on its paths, else
        the client's token."""
        match = _SESSION_PATH.match(urlsplit(path).path)
        if match is not None and match.group(1) in self._session_tokens:
            return self._session_tokens[match.group(1)]
        return self.token

    def auth_headers(self, path: str) -> dict[str, str]:
        """The Authorization header for `path` ({} without a credential)."""
        token = self.token_for(path)
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request with the credential for `path`; raises the typed `HTTPError` of
        an error answer."""
        headers = {**self.auth_headers(path), **kwargs.pop("headers", {})}
        response = await self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise http_error(response.status_code, body)
        return response

    async def sessions(self) -> list[dict[str, Any]]:
        """The server's sessions (`GET /sessions`: one info dict each)."""
        return (await self.request("GET", "/sessions")).json()["sessions"]

    async def limits(self) -> dict[str, Any]:
        """The server's limits (`GET /limits`)."""
        return (await self.request("GET", "/limits")).json()

    async def open_session(self, source: str, **options: Any) -> AsyncSession:
        """Open a session on `source` (a file path the server can read, "rtsp://...",
        "webrtc", a camera) and connect to it. options: `SessionCreate` fields (paced,
        auto_seed, max_objects, max_frames, non_overlapping; start defaults to
        "on_connect" so that no frame is missed). The session's capability tokens come back
        in `info["token"]` / `info["viewer_token"]`; the client keeps `token` for it."""
        info = (await self.request("POST", "/sessions", json={"source": source, **options})).json()
        self.use_session_token(info["id"], info.get("token"))
        return await AsyncSession.connect(self, info)

    async def session(self, session_id: str, *, token: str | None = None) -> AsyncSession:
        """Connect to an existing session; token: its control or viewer token (a viewer's
        prompts are refused with `RequestError` "forbidden"). Without one, the token the
        client holds for it (or its own token) is used."""
        if token is not None:
            self.use_session_token(session_id, token)
        info = (await self.request("GET", f"/sessions/{session_id}")).json()
        return await AsyncSession.connect(self, info)

    def websocket_url(self, path: str) -> str:
        """The ws:// (or wss://) URL of `path` on this server."""
        return "ws" + self.base_url[len("http") :] + path


class AsyncSession:
    """A connected session: send prompts (each returns its `Reply`), iterate `frames()`."""

    def __init__(self, client: AsyncClient, info: dict[str, Any], ws: ClientConnection) -> None:
        self.client = client
        self.info = info
        self.id: str = info["id"]
        # Its capability tokens: only when this client created it (docs/protocol.md).
        self.token: str | None = info.get("token")
        self.viewer_token: str | None = info.get("viewer_token")
        self.hello: dict[str, Any] = {}
        self.frames_dropped = 0  # frames this client dropped because nobody read them
        self.end: dict[str, Any] | None = None  # the session's `end` message, once it came
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._frames: asyncio.Queue[Any] = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self._publisher: WhipPublisher | None = None

    @classmethod
    async def connect(cls, client: AsyncClient, info: dict[str, Any]) -> AsyncSession:
        """Open the websocket of the session `info` describes (TLS as the client's
        `verify`), wait for its hello and start reading."""
        ssl = None
        if client.base_url.startswith("https"):
            import ssl as ssl_module

            verify = client.verify
            if isinstance(verify, ssl_module.SSLContext):
                ssl = verify
            else:
                ssl = ssl_module.create_default_context()
                if verify is False:
                    ssl.check_hostname, ssl.verify_mode = False, ssl_module.CERT_NONE
        path = f"/sessions/{info['id']}/ws"
        headers = client.auth_headers(path)
        url = client.websocket_url(path)
        ws = await connect(url, additional_headers=headers, max_size=None, ssl=ssl)
        session = cls(client, info, ws)
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), client.timeout))
        except ConnectionClosed as exc:
            await ws.close()
            raise _closed_error(exc, info["id"]) from exc
        if first.get("type") == "error":
            await ws.close()
            raise RequestError(first.get("code", "error"), first.get("message", ""))
        session.hello = first
        session._reader = asyncio.create_task(session._read(), name=f"sam2-stream-{session.id}")
        return session

    # --- prompts ---------------------------------------------------------------------------

    async def request(self, message: dict[str, Any]) -> messages.Reply:
        """Send one request (docs/protocol.md, "Client -> server") and wait for its reply;
        raises RequestError for an `error` reply, SessionEndedError if the session ends."""
        if self.end is not None:
            raise SessionEndedError(f"session {self.id} has ended ({self.end.get('state')})")
        request_id = f"c{next(self._ids)}"
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(json.dumps({**message, "id": request_id}))
            data = await asyncio.wait_for(future, self.client.timeout)
        except ConnectionClosed as exc:
            raise _closed_error(exc, self.id) from exc
        finally:
            self._pending.pop(request_id, None)
        return messages.reply(data)

    async def add_points(
        self,
        points: Sequence[Sequence[float]],
        labels: Sequence[int],
        *,
        obj_id: int | None = None,
        box: Sequence[float] | None = None,
        frame_idx: int | None = None,
    ) -> messages.Reply:
        """Clicks [[x, y], ...] (pixels of the source frame), labels 1 = object, 0 = not;
        obj_id None starts a new object."""
        message: dict[str, Any] = {
            "type": "add_points",
            "points": [[float(x), float(y)] for x, y in points],
            "labels": [int(label) for label in labels],
            "obj_id": obj_id,
        }
        if box is not None:
            message["box"] = [float(v) for v in box]
        if frame_idx is not None:
            message["frame_idx"] = frame_idx
        return await self.request(message)

    async def add_box(self, box: Sequence[float], *, obj_id: int | None = None) -> messages.Reply:
        """A box [x0, y0, x1, y1] (pixels) around an object."""
        return await self.request(
            {"type": "add_box", "box": [float(v) for v in box], "obj_id": obj_id}
        )

    async def add_mask(self, mask: np.ndarray, *, obj_id: int | None = None) -> messages.Reply:
        """A (H, W) bool mask at the frame's full size."""
        rle = mask_api.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
        encoded = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}
        return await self.request({"type": "add_mask", "mask": encoded, "obj_id": obj_id})

    async def auto_seed(self) -> messages.Reply:
        """Segment everything on the current frame and track what is new (`obj_ids`)."""
        return await self.request({"type": "auto_seed"})

    async def detect(self, **fields: Any) -> messages.Reply:
        """Run the server's detector on the current frame (fields as docs/protocol.md gives
        them); a server without one answers RequestError."""
        return await self.request({"type": "detect", **fields})

    async def remove_object(self, obj_id: int) -> messages.Reply:
        """Stop tracking `obj_id`."""
        return await self.request({"type": "remove_object", "obj_id": obj_id})

    async def reset(self) -> messages.Reply:
        """Forget every object and the session's memory."""
        return await self.request({"type": "reset"})

    async def set_options(self, **fields: Any) -> messages.Reply:
        """Change session options (fields as docs/protocol.md gives them)."""
        return await self.request({"type": "set_options", **fields})

    # --- masklets --------------------------------------------------------------------------

    async def frames(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[messages.Frame]:
        """Processed frames, in order, until the session ends (or `limit` frames). timeout:
        seconds to wait for each (default: the client's); raises TimeoutError past it."""
        count = 0
        wait = self.client.timeout if timeout is None else timeout
        while limit is None or count < limit:
            item = await asyncio.wait_for(self._frames.get(), wait)
            if item is _END:
                self._frames.put_nowait(_END)  # later iterations end at once too
                return
            count += 1
            yield item

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, track: Any) -> None:
        """Publish an aiortc video track (`aiortc.MediaStreamTrack`, e.g. from
        `aiortc.contrib.media.MediaPlayer`) into this "webrtc" session over WHIP."""
        if self._publisher is not None:
            raise ClientError("this session already publishes")
        publisher = WhipPublisher(self.client, self.id)
        await publisher.start(track)
        self._publisher = publisher

    # --- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop publishing and close the websocket (the session stays on the server)."""
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._ws.close()

    async def delete(self) -> None:
        """Close, then delete the session on the server (its tokens die with it: the client
        forgets them)."""
        await self.close()
        with contextlib.suppress(NotFoundError):
            await self.client.request("DELETE", f"/sessions/{self.id}")
        self.client.use_session_token(self.id, None)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read(self) -> None:
        error: ClientError = SessionEndedError(f"session {self.id}: connection closed")
        try:
            async for raw in self._ws:
                data = json.loads(raw)
                kind = data.get("type")
                if kind == "frame":
                    if self._frames.qsize() >= MAX_QUEUED_FRAMES:
                        self._frames.get_nowait()
                        self.frames_dropped += 1
                    self._frames.put_nowait(messages.frame(data))
                elif kind in ("ack", "error"):
                    future = self._pending.get(str(data.get("id")))
                    if future is not None and not future.done():
                        if kind == "ack":
                            future.set_result(data)
                        else:
                            future.set_exception(
                                RequestError(
                                    data.get("code", "error"),
                                    data.get("message", ""),
                                    data.get("retry_after"),
                                )
                            )
                    elif kind == "error":
                        logger.warning("session %s: %s", self.id, data.get("message"))
                elif kind == "end":
                    self.end = data
                    error = SessionEndedError(
                        f"session {self.id} ended ({data.get('state')}): {data.get('error')}"
                    )
                    self._frames.put_nowait(_END)  # the server may keep the socket open
        except ConnectionClosed as exc:
            error = _closed_error(exc, self.id)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self._frames.put_nowait(_END)


def _closed_error(exc: ConnectionClosed, session_id: str) -> ClientError:
    code = exc.rcvd.code if exc.rcvd is not None else None
    cls = _WS_CLOSE_ERRORS.get(code) if code is not None else None
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    if cls is not None and code is not None:
        return cls(code, reason or "refused", f"session {session_id}: websocket closed {code}")
    return SessionEndedError(f"session {session_id}: websocket closed ({code} {reason})")
