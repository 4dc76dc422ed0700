"""One client connection's side of the protocol, shared by every transport (the websocket,
the WebRTC data channel): the greeting, and handling one incoming client message.

Runs on the event loop; prompts go to the session's `DeviceScheduler` through
`Session.submit`, and every
reply (`ack`, `error`) goes through the client's `Subscriber`, in order with its frames.
"""

from __future__ import annotations

from typing import Any

from streamer.protocol import (
    Ack,
    AddMask,
    ClientMessage,
    ErrorCode,
    Hello,
    ProtocolError,
    SetOptions,
    parse_client_message,
)
from streamer.sessions import Session, SessionEndedError
from streamer.sessions.prompts import check_mask_size
from streamer.sessions.subscribers import Subscriber
from streamer.settings import OutputOptions, Settings


def hello_message(session: Session, settings: Settings, subscriber: Subscriber) -> Hello:
    """The `hello` a client gets first on connecting to `session`."""
    view = session.view
    return Hello(
        session_id=session.id,
        source=session.spec,
        state=session.state.value,
        obj_ids=list(view.obj_ids),
        frame_idx=view.frame_idx,
        max_message_bytes=settings.max_message_bytes,
        max_objects=session.stream.options.max_objects,
        options=subscriber.options.model_dump(mode="json"),
    )


def merge_options(options: OutputOptions, message: SetOptions) -> OutputOptions:
    """`options` with a `set_options` message's changes applied (fields left out stay)."""
    changes: dict[str, Any] = {}
    if message.format is not None:
        changes["format"] = message.format
    if message.all_objects:
        changes["obj_ids"] = None
    elif message.obj_ids is not None:
        changes["obj_ids"] = tuple(message.obj_ids)
    if message.unlimited_fps:
        changes["max_fps"] = None
    elif message.max_fps is not None:
        changes["max_fps"] = message.max_fps
    if message.mask_downscale is not None:
        changes["mask_downscale"] = message.mask_downscale
    return options.model_copy(update=changes)


def handle_client_message(
    session: Session,
    subscriber: Subscriber,
    data: str | bytes,
    *,
    max_bytes: int,
    read_only: bool = False,
) -> None:
    """Parse and act on one client message. `set_options` is answered at once; prompts are
    queued for the worker; a bad message gets an `error` reply. Never raises ProtocolError.

    A client whose replies pile up (it sends but does not read) overflows its subscriber,
    which then closes (`Subscriber.overflowed`; the transport closes the connection).
    read_only: a viewer's connection: only `set_options` is allowed, prompts get `forbidden`."""
    if subscriber.closed:
        return
    try:
        message = parse_client_message(
            data, max_bytes=max_bytes, max_mask_pixels=session.settings.max_mask_pixels
        )
        if read_only and not isinstance(message, SetOptions):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"a viewer token cannot send {message.type}: it only watches the session",
                message.id,
            )
        check_against_session(session, message)
        if isinstance(message, SetOptions):
            subscriber.set_options(merge_options(subscriber.options, message))
            frame_idx = session.view.frame_idx
            subscriber.put_nowait(Ack(id=message.id, request=message.type, frame_idx=frame_idx))
            return
        if not subscriber.reserve_reply():
            return  # over its reply budget: the subscriber closed itself
        try:
            session.submit(message, reply_to=subscriber)
        except SessionEndedError as exc:
            subscriber.release_reply()
            raise ProtocolError(ErrorCode.SESSION_ENDED, str(exc), message.id) from exc
    except ProtocolError as exc:
        subscriber.put_nowait(exc.to_message())


def check_against_session(session: Session, message: ClientMessage) -> None:
    """Checks that need the session but not the worker, done before a prompt is queued: an
    `add_mask` must have the session's frame size (so a hostile size is never decoded)."""
    if isinstance(message, AddMask):
        check_mask_size(message.mask.size, session.view.frame_hw, message.id)
