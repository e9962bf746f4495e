"""``/task``: list, create, get, cancel."""

from __future__ import annotations

from uuid import UUID

from fastapi import Depends, Query

from sandbox_agent import paging
from sandbox_agent.agent import Agent
from sandbox_agent.protocol import Page, Task, TaskCreate, TaskStatus
from sandbox_agent.routes import STORAGE_ERRORS, get_agent, token_router
from sandbox_agent.routes.params import Limit, PageId

router = token_router("tasks")


@router.get("/task", response_model=Page[Task], summary="List conversation tasks")
async def list_tasks(
    agent: Agent = Depends(get_agent),
    status: list[TaskStatus] | None = Query(None, description="Only tasks in these statuses (repeatable)"),
    page_id: str | None = PageId,
    limit: int = Limit,
) -> Page[Task]:
    """Tasks in creation order."""
    after = paging.decode_int(page_id) if page_id else 0
    results, next_after = agent.tasks.page(after, limit, status)
    return Page[Task](results=results, next_page_id=None if next_after is None else paging.encode(next_after))


@router.post(
    "/task",
    status_code=201,
    response_model=Task,
    responses=STORAGE_ERRORS,
    summary="Create a conversation task",
)
async def create_task(request: TaskCreate, agent: Agent = Depends(get_agent)) -> Task:
    """Start a task; its progress arrives as events. Unknown runnable types: 422 naming the known ones."""
    return await agent.tasks.create(request)


@router.get("/task/{task_id}", response_model=Task, summary="Get a conversation task")
async def get_task(task_id: UUID, agent: Agent = Depends(get_agent)) -> Task:
    return agent.tasks.get(task_id)


@router.delete("/task/{task_id}", response_model=Task, summary="Cancel a conversation task")
async def cancel_task(task_id: UUID, agent: Agent = Depends(get_agent)) -> Task:
    """Cancel: answers with the task once it is CANCELLED (or still CANCELLING after the kill grace)."""
    return await agent.tasks.cancel(task_id)
