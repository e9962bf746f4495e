"""Routes of the conversations themselves: create, list, count, info, delete."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response

from gateway.auth import Principal, admin_principal, current_principal
from gateway.context import context_of
from gateway.models import Conversation, ConversationCreate, Count, ErrorBody, Page, PoolStatus
from sandbox_agent.routes.documented import Limit, PageId

router = APIRouter(
    tags=["conversations"],
    responses={401: {"model": ErrorBody, "description": "No or wrong API key"}},
)
_ADMINS_ONLY: dict[int | str, dict[str, Any]] = {403: {"model": ErrorBody, "description": "Admins only"}}
#: The routes of one conversation, and what they answer for an id that is not the caller's.
_ONE = "/conversation/{conversation_id}"
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown, or another user's"}
}


@router.post(
    "/conversation",
    status_code=201,
    response_model=Conversation,
    responses={
        422: {
            "model": ErrorBody,
            "description": "Invalid body, or an unknown template (the known ones listed)",
        },
        429: {"model": ErrorBody, "description": "A conversation limit was reached"},
        404: {"model": ErrorBody, "description": "The snapshot is unknown, or another user's"},
    },
    summary="Begin a conversation",
)
async def create_conversation(
    request: Request,
    body: ConversationCreate | None = None,
    principal: Principal = Depends(current_principal),
) -> Conversation:
    """Answers READY at once (``"start": "warm"``) when a ready sandbox of the pool
    fits the options (default limits, no internet, no egress); else with status
    STARTING (``"start": "cold"``) while the sandbox starts in the background.
    Follow ``WS /conversation/{id}`` (or poll ``GET``) for READY or ERROR."""
    context, body = context_of(request), body or ConversationCreate()
    body = await context.manager.checked(body)
    seed = await context.snapshots.seed(principal, body.snapshot)  # another's snapshot: 404
    record = await context.manager.create(principal, body, seed=seed)
    return record.view()


@router.get(
    "/conversation",
    response_model=Page[Conversation],
    responses=_ADMINS_ONLY,
    summary="List conversations (admin)",
)
async def list_conversations(
    request: Request,
    page_id: str | None = PageId,
    limit: int = Limit,
    _: Principal = Depends(admin_principal),
) -> Page[Conversation]:
    return context_of(request).manager.page(page_id, limit)


@router.get(
    "/conversation-count",
    response_model=Count,
    responses=_ADMINS_ONLY,
    summary="Count conversations (admin)",
)
async def count_conversations(request: Request, _: Principal = Depends(admin_principal)) -> Count:
    return Count(count=context_of(request).manager.count())


@router.get(_ONE, response_model=Conversation, responses=_UNKNOWN, summary="Get conversation info")
async def get_conversation(
    request: Request, conversation_id: UUID, principal: Principal = Depends(current_principal)
) -> Conversation:
    return (await context_of(request).manager.get(conversation_id, principal)).view()


@router.delete(
    _ONE, status_code=204, response_class=Response, responses=_UNKNOWN, summary="Finish a conversation"
)
async def delete_conversation(
    request: Request, conversation_id: UUID, principal: Principal = Depends(current_principal)
) -> Response:
    """Stops its tasks and removes its sandbox and everything it owns. Afterwards
    the id is 404 everywhere."""
    await context_of(request).manager.delete(conversation_id, principal)
    return Response(status_code=204)


# --- the pool ---------------------------------------------------------------------------


@router.get(
    "/pool", response_model=PoolStatus, responses=_ADMINS_ONLY, summary="The pool of ready sandboxes (admin)"
)
async def pool_status(request: Request, _: Principal = Depends(admin_principal)) -> PoolStatus:
    """How many spare sandboxes are ready and starting, and how creates were served."""
    return context_of(request).manager.pool.status()
