"""``/event``: list (paged, filtered), trigger, get one."""

from __future__ import annotations

from uuid import UUID

from starlette.responses import Response

from sandbox_agent import paging
from sandbox_agent.agent import Agent
from sandbox_agent.errors import NotFound
from sandbox_agent.protocol import Event, EventTrigger, Page
from sandbox_agent.routes import STORAGE_ERRORS, get_agent, json_page, json_raw, token_router
from sandbox_agent.routes.decl import Depends, Query
from sandbox_agent.routes.params import Limit, PageId

router = token_router("events")


@router.get("/event", response_model=Page[Event], summary="List conversation events")
async def list_events(
    agent: Agent = Depends(get_agent),
    types: list[str] | None = Query(None, alias="type", description="Only these detail types (repeatable)"),
    after_seq: int = Query(0, ge=-1, description="Only events with a larger seq (-1 is read as 0)"),
    task_id: UUID | None = Query(None, description="Only events of this task"),
    page_id: str | None = PageId,
    limit: int = Limit,
) -> Response:
    """Events in seq order. Each page costs what the page holds, not the history."""
    after = max(after_seq, paging.decode_int(page_id)) if page_id else after_seq
    seqs = agent.events.select(after, limit + 1, types, task_id)
    more = len(seqs) > limit
    seqs = seqs[:limit]
    items = await agent.events.read_seqs(seqs)
    return json_page(items, paging.encode(seqs[-1]) if more else None)


@router.post(
    "/event",
    status_code=201,
    response_model=Event,
    responses=STORAGE_ERRORS,
    summary="Trigger a conversation event",
)
async def trigger_event(trigger: EventTrigger, agent: Agent = Depends(get_agent)) -> Response:
    """Store and broadcast a client event (any JSON object with a non-reserved ``type``)."""
    stored = agent.events.append(trigger.detail)
    return json_raw(stored.raw, 201)


@router.get("/event/{event_id}", response_model=Event, summary="Get a conversation event")
async def get_event(event_id: UUID, agent: Agent = Depends(get_agent)) -> Response:
    raw = await agent.events.get(event_id)
    if raw is None:
        raise NotFound(f"no event {event_id}")
    return json_raw(raw)
