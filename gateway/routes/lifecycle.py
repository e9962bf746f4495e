"""Routes of a conversation's lifecycle: pause, resume, fork, snapshot; and the snapshots themselves."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response

from gateway.auth import Principal, current_principal
from gateway.context import context_of
from gateway.models import (
    Conversation,
    ConversationStatus,
    ErrorBody,
    ForkCreate,
    Page,
    Snapshot,
    SnapshotCreate,
)
from sandbox_agent.routes.documented import Limit, PageId

router = APIRouter(
    tags=["lifecycle"],
    responses={401: {"model": ErrorBody, "description": "No or wrong API key"}},
)
_ONE = "/conversation/{conversation_id}"
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown, or another user's"},
    409: {"model": ErrorBody, "description": "The conversation has ended (ERROR, STOPPING)"},
}
_SNAPSHOT_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown, or another user's"}
}


@router.post(f"{_ONE}/pause", response_model=Conversation, responses=_UNKNOWN, summary="Pause a conversation")
async def pause_conversation(
    request: Request, conversation_id: UUID, principal: Principal = Depends(current_principal)
) -> Conversation:
    """Freezes the sandbox (its processes stop, memory kept): status PAUSED. Any request
    or WebSocket to it resumes it; it is removed ``CONVOY_PAUSED_TTL`` seconds later."""
    manager = context_of(request).manager
    record = await manager.get(conversation_id, principal)
    if record.status is ConversationStatus.STARTING:
        await manager.ready_handle(record)
    await manager.pausing.pause(record)
    return record.view()


@router.post(
    f"{_ONE}/resume", response_model=Conversation, responses=_UNKNOWN, summary="Resume a paused conversation"
)
async def resume_conversation(
    request: Request, conversation_id: UUID, principal: Principal = Depends(current_principal)
) -> Conversation:
    """Thaws a PAUSED conversation: READY again. A READY one stays so."""
    manager = context_of(request).manager
    record = await manager.get(conversation_id, principal)
    await manager.ready_handle(record)
    return record.view()


@router.post(
    f"{_ONE}/fork",
    status_code=201,
    response_model=Conversation,
    responses={**_UNKNOWN, 429: {"model": ErrorBody, "description": "A conversation limit was reached"}},
    summary="Fork a conversation",
)
async def fork_conversation(
    request: Request,
    conversation_id: UUID,
    body: ForkCreate | None = None,
    principal: Principal = Depends(current_principal),
) -> Conversation:
    """A new conversation of the same owner and options whose workspace is a copy of this
    one's; answered once it is READY (or ERROR). Its first event after READY is ``Forked``
    (the original's id and seq): processes, terminals and events are not copied."""
    record = await context_of(request).snapshots.fork(principal, conversation_id, body or ForkCreate())
    return record.view()


@router.post(
    f"{_ONE}/snapshot",
    status_code=201,
    response_model=Snapshot,
    responses={**_UNKNOWN, 429: {"model": ErrorBody, "description": "The snapshot quota is reached"}},
    summary="Snapshot a conversation's workspace",
)
async def snapshot_conversation(
    request: Request,
    conversation_id: UUID,
    body: SnapshotCreate | None = None,
    principal: Principal = Depends(current_principal),
) -> Snapshot:
    """A saved copy of the workspace, yours; it outlives the conversation. Start a
    conversation from it with ``POST /conversation {"snapshot": id}``."""
    return await context_of(request).snapshots.create(principal, conversation_id, body or SnapshotCreate())


@router.get("/snapshot", response_model=Page[Snapshot], summary="List snapshots (yours; admin: all)")
async def list_snapshots(
    request: Request,
    page_id: str | None = PageId,
    limit: int = Limit,
    principal: Principal = Depends(current_principal),
) -> Page[Snapshot]:
    return await context_of(request).snapshots.page(principal, page_id, limit)


@router.get(
    "/snapshot/{snapshot_id}", response_model=Snapshot, responses=_SNAPSHOT_UNKNOWN, summary="Get a snapshot"
)
async def get_snapshot(
    request: Request, snapshot_id: UUID, principal: Principal = Depends(current_principal)
) -> Snapshot:
    return await context_of(request).snapshots.get(principal, snapshot_id)


@router.delete(
    "/snapshot/{snapshot_id}",
    status_code=204,
    response_class=Response,
    responses=_SNAPSHOT_UNKNOWN,
    summary="Delete a snapshot",
)
async def delete_snapshot(
    request: Request, snapshot_id: UUID, principal: Principal = Depends(current_principal)
) -> Response:
    await context_of(request).snapshots.delete(principal, snapshot_id)
    return Response(status_code=204)
