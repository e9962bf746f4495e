"""``/task``: list, create, get, cancel."""

from __future__ import annotations

from uuid import UUID

from starlette.responses import Response

from sandbox_agent import paging
from sandbox_agent.agent import Agent
from sandbox_agent.protocol import TASK_STREAM_MEDIA_TYPE, Page, Task, TaskCreate, TaskStatus
from sandbox_agent.routes import STORAGE_ERRORS, Responses, get_agent, token_router
from sandbox_agent.routes.decl import Depends, Query
from sandbox_agent.routes.params import Limit, PageId
from sandbox_agent.task_stream import stream_task

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


#: ``?wait=true``'s answer, for the document: one record a line (sandbox_agent.task_stream).
_TASK_STREAM: Responses = {
    201: {
        "description": "The task (JSON); with ``wait=true`` its result as a stream of JSON lines",
        "content": {
            TASK_STREAM_MEDIA_TYPE: {
                "itemSchema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "description": "The task: first as created, last once final",
                            "properties": {
                                "type": {"const": "task"},
                                "task": {"$ref": "#/components/schemas/Task"},
                            },
                            "required": ["type", "task"],
                        },
                        {
                            "type": "object",
                            "description": "One event of the task, as the event log stores it",
                            "properties": {
                                "type": {"const": "event"},
                                "event": {"$ref": "#/components/schemas/Event"},
                            },
                            "required": ["type", "event"],
                        },
                    ]
                }
            }
        },
    }
}
_Wait = Query(
    False,
    description="Answer the task's result as a stream (JSON lines): the task, each of its events, "
    "then the task once final with its exit code. Leaving early does not cancel the task.",
)


@router.post(
    "/task",
    status_code=201,
    response_model=Task,
    responses={**STORAGE_ERRORS, **_TASK_STREAM},
    summary="Create a conversation task",
)
async def create_task(request: TaskCreate, agent: Agent = Depends(get_agent), wait: bool = _Wait) -> Response:
    """Start a task; its progress arrives as events (with ``wait=true``, in the answer too).
    Unknown runnable types: 422 naming the known ones."""
    if wait:
        return await stream_task(agent, request)
    return _task_json(await agent.tasks.create(request))


def _task_json(task: Task) -> Response:
    return Response(task.model_dump_json(), status_code=201, media_type="application/json")


@router.get("/task/{task_id}", response_model=Task, summary="Get a conversation task")
async def get_task(task_id: UUID, agent: Agent = Depends(get_agent)) -> Task:
    return agent.tasks.get(task_id)


@router.delete("/task/{task_id}", response_model=Task, summary="Cancel a conversation task")
async def cancel_task(task_id: UUID, agent: Agent = Depends(get_agent)) -> Task:
    """Cancel: answers with the task once it is CANCELLED (or still CANCELLING after the kill grace)."""
    return await agent.tasks.cancel(task_id)
