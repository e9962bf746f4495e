"""Following one conversation over an accepted (or about to be accepted) WebSocket.

While the conversation is STARTING its follower gets the gateway's seq-0
STARTING frames (with the phase); frames the client sends meanwhile get an
``Error`` frame each. Once READY the agent's event stream is opened at
``after_seq`` and frames are proxied both ways (:func:`gateway.wsproxy.proxy_frames`)
until one side closes. A conversation that ends or fails first is told with
its ERROR frame (if it failed) and close code 4410; an agent whose stream
cannot be opened, with 4502.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from uuid import UUID, uuid4

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.context import GatewayContext
from gateway.errors import GatewayError
from gateway.records import Record
from gateway.status import StatusNotice
from gateway.wsproxy import UpstreamUnavailable, close_client, connect_upstream, proxy_frames
from sandbox_agent.protocol import (
    WS_CLOSE_CONVERSATION_ENDED,
    WS_CLOSE_UPSTREAM_UNAVAILABLE,
    ConversationStatus,
    ErrorEvent,
    Event,
)
from sandbox_agent.race import finished, race

_FOLLOWED = (ConversationStatus.READY, ConversationStatus.PAUSED)


def error_frame(conversation_id: UUID | None, message: str) -> str:
    """An ``Error`` event for one client: seq 0, never stored (nil id: no conversation)."""
    event = Event(
        id=uuid4(),
        seq=0,
        conversation_id=conversation_id or UUID(int=0),
        created_at=datetime.now(UTC),
        detail=ErrorEvent(message=message),
    )
    return event.model_dump_json()


async def follow(
    websocket: WebSocket,
    context: GatewayContext,
    record: Record,
    notices: asyncio.Queue[StatusNotice],
    after_seq: int,
) -> None:
    """Follow ``record`` as the module docstring says, until either side closes.

    ``notices`` is the record's status subscription, taken before its status was
    read (so no change is missed); the socket is accepted here if it is not yet.
    """
    manager = context.manager
    with manager.connection(record):
        if record.status is ConversationStatus.STARTING:
            await _accept(websocket)
            await websocket.send_text(StatusNotice(record.id, record.status, phase=record.phase).frame())
            if not await _until_ready(websocket, record, notices):
                return
        if record.status is ConversationStatus.PAUSED:  # a follower resumes it, as a request does
            with contextlib.suppress(GatewayError):
                await manager.pausing.resume(record)
        if record.status is not ConversationStatus.READY or record.handle is None:
            await _ended(websocket, record)
            return
        try:
            with manager.pausing.watching(record):  # paused through another gateway: resumed
                upstream = await connect_upstream(record.handle, after_seq, context.settings)
        except UpstreamUnavailable as error:
            await _accept(websocket)
            await close_client(websocket, WS_CLOSE_UPSTREAM_UNAVAILABLE, str(error))
            return
        await _accept(websocket)

        def ended() -> bool:  # paused meanwhile is not ended: the frames wait for the resume
            return manager.lookup(record.id) is not record or record.status not in _FOLLOWED

        await proxy_frames(
            websocket,
            upstream,
            ended=ended,
            on_frame=lambda: manager.touch(record),
            settings=context.settings,
        )


async def _accept(websocket: WebSocket) -> None:
    if websocket.client_state is WebSocketState.CONNECTING:
        await websocket.accept()


async def _until_ready(websocket: WebSocket, record: Record, notices: asyncio.Queue[StatusNotice]) -> bool:
    """Sends STARTING frames until the conversation is READY (True) or ended (False:
    ERROR frame sent, client closed). Frames from the client meanwhile get an Error."""

    async def statuses() -> bool:
        while record.status is ConversationStatus.STARTING:
            notice = await notices.get()
            if notice.status is not ConversationStatus.STARTING:
                break
            await websocket.send_text(notice.frame())
        return record.status is ConversationStatus.READY

    async def client() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            await websocket.send_text(error_frame(record.id, "the conversation is not READY yet"))

    ready, client_gone = await race(statuses(), client())
    if finished(client_gone):
        return False
    if ready is True:
        return True
    await _ended(websocket, record)
    return False


async def _ended(websocket: WebSocket, record: Record) -> None:
    """Tells the client the conversation is over (its ERROR frame first, if it failed) and closes."""
    await _accept(websocket)
    if record.status is ConversationStatus.ERROR:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await websocket.send_text(StatusNotice(record.id, record.status, reason=record.reason).frame())
    await close_client(websocket, WS_CLOSE_CONVERSATION_ENDED, record.reason or "the conversation ended")
