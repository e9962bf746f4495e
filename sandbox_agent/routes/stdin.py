"""``POST /task/{task_id}/stdin``: write to the stdin of a task started with ``"stdin": true``.

Its own router (beside :mod:`sandbox_agent.routes.tasks`): the body is raw bytes,
streamed to the task's pipe as it arrives (bounded like every body by
``max_event_bytes``); ``?eof=true`` closes the pipe afterwards (an empty body with
``eof`` just closes it).
"""

from __future__ import annotations

from uuid import UUID

from starlette.requests import Request

from sandbox_agent.agent import Agent
from sandbox_agent.protocol import ErrorBody, StdinWritten
from sandbox_agent.routes import get_agent, token_router
from sandbox_agent.routes.decl import Depends, Query

router = token_router("tasks")

_RAW_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/task/{task_id}/stdin",
    response_model=StdinWritten,
    responses={
        409: {
            "model": ErrorBody,
            "description": 'The task has no open stdin (not started with "stdin": true, closed, or finished)',
        },
        413: {"model": ErrorBody, "description": "The body is too large"},
    },
    openapi_extra=_RAW_BODY,
    summary="Write to a task's stdin",
)
async def write_stdin(
    task_id: UUID,
    request: Request,
    eof: bool = Query(False, description="Close the task's stdin after this body (the process reads EOF)."),
    agent: Agent = Depends(get_agent),
) -> StdinWritten:
    """The raw body is written to the task's stdin, in order; answers once the pipe took it
    (it waits while the process is not reading)."""
    pipe = agent.tasks.stdin(task_id)
    written = 0
    async for chunk in request.stream():
        if chunk:
            written += await pipe.write(chunk)
    if eof:
        await pipe.write(b"", eof=True)
    return StdinWritten(task_id=task_id, written=written, closed=pipe.closed)
