"""Every per-conversation route of the sandbox agent, proxied.

Each route is declared for real - parameters, request and response models from
:mod:`sandbox_agent.protocol` - so ``/openapi.json`` and ``/docs`` describe
them completely (the upload body is declared in the document only).

All of them are served alike by :class:`ProxyRoute`: authenticate, find the
caller's conversation (another user's is 404), then stream the request, exactly
as the client sent it, to the agent and the agent's answer back
(:mod:`gateway.proxy`). Parameters and bodies are validated once, by the agent,
with the same models (its 422 answers come back as they are): the gateway does
not parse what it forwards, which keeps a proxied request close to the cost of
a direct one. The functions below are therefore declarations: their signatures
and docstrings are the documentation; their bodies never run.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.routing import APIRoute

from gateway.auth import current_principal
from gateway.context import context_of
from gateway.errors import NotFound
from gateway.models import AgentInfo, Count, ErrorBody, Event, EventTrigger, FileInfo, Page, Task, TaskCreate
from sandbox_agent.protocol import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, TaskStatus

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request could not be read (e.g. malformed JSON)"},
    401: {"model": ErrorBody, "description": "No or wrong API key"},
    404: {"model": ErrorBody, "description": "Unknown conversation (or another user's), or unknown item"},
    502: {"model": ErrorBody, "description": "The sandbox could not be reached"},
    503: {"model": ErrorBody, "description": "The conversation is not READY"},
    504: {"model": ErrorBody, "description": "The sandbox did not answer in time"},
    # The agent's, passed through: field errors as a list, or a sentence (a bad cursor).
    422: {"model": ErrorBody, "description": "Invalid parameters or body"},
}
_PATH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The path leaves the workspace or cannot be a file name"},
    403: {"model": ErrorBody, "description": "The path leaves the workspace"},
    409: {"model": ErrorBody, "description": "It exists already"},
    507: {"model": ErrorBody, "description": "The sandbox's disk is full: nothing was written"},
}
#: Writes to the event log (a new event, a new task) fail the same way on a full disk.
_STORAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    507: {"model": ErrorBody, "description": "The sandbox's disk is full: nothing was recorded"},
}
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One part per file; its filename may hold sub-directories (a/b.txt).",
                    }
                },
                "required": ["files"],
            }
        }
    },
}
_BINARY = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}

_Declaration = TypeVar("_Declaration", bound=Callable[..., Any])

PageId = Query(None, description="Cursor from the previous page's next_page_id")
Limit = Query(DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT)


async def forward_request(request: Request, download: bool) -> Response:
    """Auth, ownership, READY, then the agent's answer (see the module docstring)."""
    context = context_of(request)
    principal = current_principal(request)
    manager = context.manager
    raw_id = request.path_params["conversation_id"]
    try:
        conversation_id = UUID(raw_id)
    except ValueError:
        raise NotFound(f"conversation {raw_id} not found") from None
    record = manager.get(conversation_id, principal)
    handle = manager.ready_handle(record)
    manager.touch(record)
    return await context.proxy.forward(
        request, handle, download=download, activity=lambda: manager.connection(record)
    )


class ProxyRoute(APIRoute):
    """A route documented by its endpoint's signature and served by :func:`forward_request`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        download = "/file-content/" in self.path

        async def handler(request: Request) -> Response:
            return await forward_request(request, download)

        return handler


router = APIRouter(prefix="/conversation/{conversation_id}", responses=_ERRORS, route_class=ProxyRoute)


def _path_route(method: str, path: str, **options: Any) -> Callable[[_Declaration], _Declaration]:
    """A route on a workspace path: tagged "files", with the path errors besides its own."""
    responses = {**_PATH_ERRORS, **options.pop("responses", {})}
    return router.api_route(path, methods=[method], responses=responses, tags=["files"], **options)


# --- events -------------------------------------------------------------------------


@router.get("/event", response_model=Page[Event], tags=["events"], summary="List conversation events")
async def list_events(
    request: Request,
    conversation_id: UUID,
    type: list[str] | None = Query(None, description="Only these detail types (repeatable)"),
    after_seq: int | None = Query(None, ge=-1, description="Only events with a larger seq"),
    task_id: UUID | None = Query(None, description="Only events of this task"),
    page_id: str | None = PageId,
    limit: int = Limit,
) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.post(
    "/event",
    status_code=201,
    response_model=Event,
    responses=_STORAGE_ERRORS,
    tags=["events"],
    summary="Trigger a conversation event",
)
async def trigger_event(
    request: Request,
    conversation_id: UUID,
    body: EventTrigger,
) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.get("/event/{event_id}", response_model=Event, tags=["events"], summary="Get a conversation event")
async def get_event(request: Request, conversation_id: UUID, event_id: UUID) -> Response:
    raise NotImplementedError  # served by ProxyRoute


# --- tasks --------------------------------------------------------------------------


@router.get("/task", response_model=Page[Task], tags=["tasks"], summary="List conversation tasks")
async def list_tasks(
    request: Request,
    conversation_id: UUID,
    status: list[TaskStatus] | None = Query(None, description="Only tasks in these statuses (repeatable)"),
    page_id: str | None = PageId,
    limit: int = Limit,
) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.post(
    "/task",
    status_code=201,
    response_model=Task,
    responses=_STORAGE_ERRORS,
    tags=["tasks"],
    summary="Create a conversation task",
)
async def create_task(
    request: Request,
    conversation_id: UUID,
    body: TaskCreate,
) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.get("/task/{task_id}", response_model=Task, tags=["tasks"], summary="Get a conversation task")
async def get_task(request: Request, conversation_id: UUID, task_id: UUID) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.delete("/task/{task_id}", response_model=Task, tags=["tasks"], summary="Cancel a conversation task")
async def cancel_task(request: Request, conversation_id: UUID, task_id: UUID) -> Response:
    raise NotImplementedError  # served by ProxyRoute


# --- files --------------------------------------------------------------------------


@_path_route(
    "POST", "/dir/{path:path}", status_code=201, response_model=FileInfo, summary="Create a new directory"
)
async def make_dir(request: Request, conversation_id: UUID, path: str) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@_path_route(
    "POST", "/file/{path:path}", status_code=201, response_model=FileInfo, summary="Create a new file (touch)"
)
async def touch_file(request: Request, conversation_id: UUID, path: str) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@_path_route("GET", "/file/{path:path}", response_model=FileInfo, summary="File info")
async def file_info(request: Request, conversation_id: UUID, path: str) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@_path_route(
    "DELETE",
    "/file/{path:path}",
    status_code=204,
    response_class=Response,
    summary="Delete a file, or a directory with its contents",
)
async def delete_file(request: Request, conversation_id: UUID, path: str) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@_path_route(
    "POST",
    "/upload/{parent_path:path}",
    status_code=201,
    response_model=list[FileInfo],
    responses={
        413: {"model": ErrorBody, "description": "Too big"},
        415: {"model": ErrorBody, "description": "The body is not multipart/form-data"},
    },
    openapi_extra={"requestBody": _UPLOAD_BODY},
    summary="Upload a set of files (multipart, streamed)",
)
async def upload(
    request: Request,
    conversation_id: UUID,
    parent_path: str,
    overwrite: bool = Query(True, description="false: an existing file is a 409"),
) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@_path_route(
    "GET",
    "/file-content/{path:path}",
    response_class=Response,
    responses={200: _BINARY, 206: {"description": "The requested Range", **_BINARY}},
    summary="Download a file (streamed; HTTP Range supported)",
)
async def file_content(request: Request, conversation_id: UUID, path: str) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.get("/file-search", response_model=Page[FileInfo], tags=["files"], summary="Search files")
async def file_search(
    request: Request,
    conversation_id: UUID,
    pattern: str | None = Query(None, description="Glob on the path, e.g. **/*.py"),
    q: str | None = Query(None, description="Substring of the path"),
    path: str | None = Query(None, description="Only under this directory"),
    page_id: str | None = PageId,
    limit: int = Limit,
) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.get("/file-count", response_model=Count, tags=["files"], summary="Count files")
async def file_count(
    request: Request,
    conversation_id: UUID,
    pattern: str | None = Query(None, description="Glob on the path"),
    q: str | None = Query(None, description="Substring of the path"),
    path: str | None = Query(None, description="Only under this directory"),
) -> Response:
    raise NotImplementedError  # served by ProxyRoute


@router.get("/agent-info", response_model=AgentInfo, tags=["agent"], summary="What this sandbox can run")
async def agent_info(request: Request, conversation_id: UUID) -> Response:
    raise NotImplementedError  # served by ProxyRoute
