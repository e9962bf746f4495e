"""The three WebSocket routes: follow one conversation, create-and-follow, firehose.

Refusals happen after the handshake, with a close code a browser can read:
4401 no or wrong key, 4403 not allowed, 4404 unknown conversation (or another
user's), 4429 a limit was reached (an ``Error`` frame says which), 4410 the
conversation ended or failed (its ERROR frame comes first), 1008 bad query.

While a conversation is STARTING its followers get the gateway's seq-0
STARTING frames (with the phase); once READY the relay to the sandbox begins
at ``after_seq`` (``WS /conversation/`` uses 0: the agent's READY event, seq 1,
comes first). Frames a client sends before READY get an ``Error`` frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from uuid import UUID, uuid4

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.auth import AuthError, Principal
from gateway.context import GatewayContext, context_of
from gateway.errors import GatewayError, LimitReached
from gateway.models import WS_CLOSE_LIMIT_REACHED, ConversationCreate
from gateway.records import Record
from gateway.status import StatusNotice
from gateway.wsproxy import UpstreamUnavailable, close_client, connect_upstream, relay
from sandbox_agent.protocol import (
    AFTER_SEQ_LIVE,
    WS_CLOSE_CONVERSATION_ENDED,
    WS_CLOSE_FORBIDDEN,
    WS_CLOSE_NOT_FOUND,
    WS_CLOSE_UNAUTHORIZED,
    WS_CLOSE_UPSTREAM_UNAVAILABLE,
    ConversationStatus,
    ErrorEvent,
    Event,
)

router = APIRouter()


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    await close_client(websocket, code, reason)


async def _principal(websocket: WebSocket, context: GatewayContext) -> Principal | None:
    try:
        return context.auth.authenticate(websocket)
    except AuthError as error:
        await _refuse(
            websocket, WS_CLOSE_UNAUTHORIZED if error.status == 401 else WS_CLOSE_FORBIDDEN, error.detail
        )
        return None


def _error_frame(record_id: UUID | None, message: str) -> str:
    """An ``Error`` event for one client: seq 0, never stored (nil id: no conversation)."""
    detail = ErrorEvent(message=message)
    event = Event(
        id=uuid4(),
        seq=0,
        conversation_id=record_id or UUID(int=0),
        created_at=datetime.now(UTC),
        detail=detail,
    )
    return event.model_dump_json()


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
            await websocket.send_text(_error_frame(record.id, "the conversation is not READY yet"))

    waiting, reading = asyncio.ensure_future(statuses()), asyncio.ensure_future(client())
    try:
        await asyncio.wait((waiting, reading), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, reading):
            task.cancel()
        await asyncio.gather(waiting, reading, return_exceptions=True)
    if reading.done() and not reading.cancelled():
        return False  # the client left
    if not waiting.cancelled() and waiting.exception() is None and waiting.result():
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


async def _follow(
    websocket: WebSocket,
    context: GatewayContext,
    record: Record,
    notices: asyncio.Queue[StatusNotice],
    after_seq: int,
) -> None:
    """Relays ``record`` to the client (accepting it once the upstream is open, if not yet)."""
    manager = context.manager
    with manager.connection(record):
        if record.status is ConversationStatus.STARTING:
            await _accept(websocket)
            await websocket.send_text(StatusNotice(record.id, record.status, phase=record.phase).frame())
            if not await _until_ready(websocket, record, notices):
                return
        if record.status is not ConversationStatus.READY or record.handle is None:
            await _ended(websocket, record)
            return
        try:
            upstream = await connect_upstream(record.handle, after_seq, context.settings)
        except UpstreamUnavailable as error:
            await _accept(websocket)
            await close_client(websocket, WS_CLOSE_UPSTREAM_UNAVAILABLE, str(error))
            return
        await _accept(websocket)

        def ended() -> bool:
            return manager.lookup(record.id) is not record or record.status is not ConversationStatus.READY

        await relay(
            websocket,
            upstream,
            ended=ended,
            on_frame=lambda: manager.touch(record),
            settings=context.settings,
        )


@router.websocket("/conversation/{conversation_id}")
async def follow_conversation(websocket: WebSocket, conversation_id: str) -> None:
    """Connect to an existing conversation: its events after ``after_seq`` (default
    0: all), then live. Frames sent create tasks or trigger events."""
    context = context_of(websocket)
    principal = await _principal(websocket, context)
    if principal is None:
        return
    try:
        after_seq = int(websocket.query_params.get("after_seq", "0"))
        if after_seq < AFTER_SEQ_LIVE:
            raise ValueError
    except ValueError:
        await _refuse(websocket, 1008, "after_seq must be an integer >= -1")
        return
    try:
        record = context.manager.get(UUID(conversation_id), principal)
    except (ValueError, GatewayError):
        await _refuse(websocket, WS_CLOSE_NOT_FOUND, f"conversation {conversation_id} not found")
        return
    with context.bus.subscribe(record.id) as notices:
        await _follow(websocket, context, record, notices, after_seq)


@router.websocket("/conversation/")
@router.websocket("/conversation")  # as the seed's browser snippet writes it
async def create_and_follow(websocket: WebSocket) -> None:
    """Create a conversation (options from the query: ``?title=..&idle_timeout=..``)
    and follow it: STARTING frames, then the conversation's events from seq 1 (READY)."""
    context = context_of(websocket)
    principal = await _principal(websocket, context)
    if principal is None:
        return
    query = {key: value for key, value in websocket.query_params.items() if key != "token"}
    try:
        body = ConversationCreate.model_validate(query)
    except ValidationError as error:
        await _refuse(websocket, 1008, f"bad query: {error.errors()[0]['msg']}"[:120])
        return
    await websocket.accept()
    try:
        record = context.manager.create(principal, body)
    except GatewayError as error:
        await websocket.send_text(_error_frame(None, error.detail))
        code = WS_CLOSE_LIMIT_REACHED if isinstance(error, LimitReached) else 1008
        await close_client(websocket, code, error.detail)
        return
    # Subscribed in the same step as the creation: no status notice is missed.
    with context.bus.subscribe(record.id) as notices:
        await _follow(websocket, context, record, notices, 0)


@router.websocket("/firehose/")
async def firehose(websocket: WebSocket) -> None:
    """Every event of every conversation (admin)."""
    context = context_of(websocket)
    principal = await _principal(websocket, context)
    if principal is None:
        return
    if not principal.is_admin:
        await _refuse(websocket, WS_CLOSE_FORBIDDEN, "the firehose is for admins")
        return
    await websocket.accept()
    with contextlib.suppress(OSError):
        await context.firehose.serve(websocket)
