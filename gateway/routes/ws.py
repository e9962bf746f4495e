"""The WebSocket routes: follow one conversation, create-and-follow, firehose, a terminal.

Refusals happen after the handshake, with a close code a browser can read:
4401 no or wrong key, 4403 not allowed, 4404 unknown conversation (or another
user's), 4429 a limit was reached (an ``Error`` frame says which), 4410 the
conversation ended or failed (its ERROR frame comes first), 1008 bad query.

What a follower gets (STARTING frames, then the conversation's events after
``after_seq``) is :mod:`gateway.following`; ``WS /conversation/`` follows from
0, so the agent's READY event (seq 1) comes first.
"""

from __future__ import annotations

import contextlib
from uuid import UUID

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError

from gateway.auth import AuthError, Principal
from gateway.context import GatewayContext, context_of
from gateway.errors import GatewayError, LimitReached
from gateway.following import error_frame, follow
from gateway.models import ConversationCreate
from gateway.status import StatusNotice
from gateway.terminal_relay import relay_terminal
from gateway.wsproxy import close_client
from sandbox_agent.protocol import (
    AFTER_SEQ_LIVE,
    WS_CLOSE_BAD_QUERY,
    WS_CLOSE_FORBIDDEN,
    WS_CLOSE_LIMIT_REACHED,
    WS_CLOSE_NOT_FOUND,
    WS_CLOSE_UNAUTHORIZED,
    ConversationStatus,
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
        await _refuse(websocket, WS_CLOSE_BAD_QUERY, "after_seq must be an integer >= -1")
        return
    try:
        record = await context.manager.get(UUID(conversation_id), principal)
    except (ValueError, GatewayError):
        await _refuse(websocket, WS_CLOSE_NOT_FOUND, f"conversation {conversation_id} not found")
        return
    with context.bus.subscribe(record.id) as notices:
        await follow(websocket, context, record, notices, after_seq)


@router.websocket("/conversation/")
@router.websocket("/conversation")  # as the seed's browser snippet writes it
async def create_and_follow(websocket: WebSocket) -> None:
    """Create a conversation (options from the query: ``?title=..&idle_timeout=..&template=..``)
    and follow it: STARTING frames, then the conversation's events from seq 1 (READY)."""
    context = context_of(websocket)
    principal = await _principal(websocket, context)
    if principal is None:
        return
    query = {key: value for key, value in websocket.query_params.items() if key != "token"}
    try:
        body = ConversationCreate.model_validate(query)
    except ValidationError as error:
        await _refuse(websocket, WS_CLOSE_BAD_QUERY, f"bad query: {error.errors()[0]['msg']}"[:120])
        return
    await websocket.accept()
    try:
        body = await context.manager.checked(body)
        seed = await context.snapshots.seed(principal, body.snapshot)
        record = await context.manager.create(principal, body, seed=seed)
    except GatewayError as error:
        await websocket.send_text(error_frame(None, error.detail))
        code = WS_CLOSE_LIMIT_REACHED if isinstance(error, LimitReached) else WS_CLOSE_BAD_QUERY
        await close_client(websocket, code, error.detail)
        return
    # Subscribed in the same step as the create's answer: no status notice is missed.
    with context.bus.subscribe(record.id) as notices:
        if record.status is not ConversationStatus.STARTING:
            # A warm create answers once claimed: its client still sees it start, as the seed's does.
            phase = "claimed a ready sandbox" if record.start == "warm" else None
            starting = StatusNotice(record.id, ConversationStatus.STARTING, phase=phase)
            await websocket.send_text(starting.frame())
        await follow(websocket, context, record, notices, 0)


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


@router.websocket("/conversation/{conversation_id}/terminal/{terminal_id}")
async def attach_terminal(websocket: WebSocket, conversation_id: str, terminal_id: str) -> None:
    """View and type into a terminal: its output from byte ``offset`` (default 0) as binary
    frames, then live; binary frames sent are typed into it, a text frame
    ``{"type": "resize", "cols", "rows"}`` resizes it (see :mod:`gateway.terminal_relay`)."""
    context = context_of(websocket)
    principal = await _principal(websocket, context)
    if principal is None:
        return
    try:
        offset = int(websocket.query_params.get("offset", "0"))
        if offset < 0:
            raise ValueError
    except ValueError:
        await _refuse(websocket, WS_CLOSE_BAD_QUERY, "offset must be an integer >= 0")
        return
    try:
        record = await context.manager.get(UUID(conversation_id), principal)
        terminal = UUID(terminal_id)
    except (ValueError, GatewayError):
        await _refuse(
            websocket, WS_CLOSE_NOT_FOUND, f"conversation {conversation_id} or its terminal not found"
        )
        return
    await relay_terminal(websocket, context, record, terminal, offset)
