"""Files in the workspace: mkdir, touch, info, delete, upload, download, search, count."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from sandbox_agent import paging, search
from sandbox_agent.agent import Agent
from sandbox_agent.downloads import file_response
from sandbox_agent.protocol import Count, ErrorBody, FileInfo, Page
from sandbox_agent.routes import PATH_ERRORS, Responses, get_agent, token_router
from sandbox_agent.routes.decl import Depends, Endpoint, Header, Query
from sandbox_agent.routes.params import Limit, PageId
from sandbox_agent.uploads import Upload

router = token_router("files")

#: The upload body, for the document only: the route streams it itself.
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
_Pattern = Query(None, description="Glob on the workspace-relative path, e.g. **/*.py")
_Substring = Query(None, description="Case-insensitive substring of the path")
_Under = Query("", description="Only inside this directory")
#: What a directory given to search or count may be wrong with.
_UNDER_ERRORS: Responses = {code: PATH_ERRORS[code] for code in (400, 403)}


def _creates(path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
    """Declares a route that creates one workspace entry: 201 with its FileInfo, 409 when it exists."""
    return router.post(path, status_code=201, response_model=FileInfo, responses=PATH_ERRORS, summary=summary)


@_creates("/dir/{path:path}", "Create a new directory")
async def make_dir(path: str, agent: Agent = Depends(get_agent)) -> FileInfo:
    """Create a directory (and missing parents); 409 when it exists."""
    return await agent.workspace.mkdir(path)


@_creates("/file/{path:path}", "Create a new file (touch)")
async def touch_file(path: str, agent: Agent = Depends(get_agent)) -> FileInfo:
    """Create an empty file (and missing parents); 409 when it exists."""
    return await agent.workspace.touch(path)


@router.get("/file/{path:path}", response_model=FileInfo, responses=PATH_ERRORS, summary="File info")
async def file_info(path: str, agent: Agent = Depends(get_agent)) -> FileInfo:
    return await agent.workspace.info(path)


@router.delete(
    "/file/{path:path}",
    status_code=204,
    response_class=Response,
    responses=PATH_ERRORS,
    summary="Delete a file, or a directory with its contents",
)
async def delete_file(path: str, agent: Agent = Depends(get_agent)) -> Response:
    """Delete a file, a symlink (not its target) or a directory with its contents."""
    await agent.workspace.delete(path)
    return Response(status_code=204)


@router.post(
    "/upload/{parent_path:path}",
    status_code=201,
    response_model=list[FileInfo],
    responses={
        **PATH_ERRORS,
        413: {"model": ErrorBody, "description": "Too big"},
        415: {"model": ErrorBody, "description": "The body is not multipart/form-data"},
    },
    openapi_extra={"requestBody": _UPLOAD_BODY},
    summary="Upload a set of files (multipart, streamed)",
)
async def upload(
    parent_path: str,
    request: Request,
    overwrite: bool = Query(True, description="false: an existing file is a 409"),
    agent: Agent = Depends(get_agent),
) -> list[FileInfo]:
    """Multipart upload, parts named ``files``; filenames may contain subdirectories.

    All or nothing: on any failure no file of the upload is left at its final path
    (replaced files are put back) and nothing staged remains. 409 a file exists
    (``overwrite=false``) or a directory is in the way; 413 too large; 507 the disk
    filled up, with ``detail`` naming the file that failed. Files are staged outside
    the workspace (in the agent's state dir), so nothing of an upload in progress
    is ever listed, counted or reachable.
    """
    job = Upload(
        agent.workspace,
        agent.settings.upload_staging_dir,
        parent_path,
        overwrite=overwrite,
        max_bytes=agent.settings.max_upload_bytes,
    )
    return await job.receive(
        request.headers.get("content-type"), request.headers.get("content-length"), request.stream()
    )


@router.get(
    "/file-content/{path:path}",
    response_class=Response,
    responses={
        **PATH_ERRORS,
        200: _BINARY,
        206: {"description": "The requested Range", **_BINARY},
        416: {"model": ErrorBody, "description": "The Range starts past the end"},
    },
    summary="Download a file (streamed; HTTP Range supported)",
)
async def file_content(
    path: str,
    agent: Agent = Depends(get_agent),
    range_header: str | None = Header(None, alias="range"),
    if_range: str | None = Header(None, alias="if-range"),
) -> Response:
    """The file's bytes, streamed; one HTTP Range honoured (206), 416 past the end."""
    return await file_response(agent.workspace, path, range_header, if_range)


@router.get("/file-search", response_model=Page[FileInfo], responses=_UNDER_ERRORS, summary="Search files")
async def file_search(
    agent: Agent = Depends(get_agent),
    pattern: str | None = _Pattern,
    q: str | None = _Substring,
    path: str = _Under,
    page_id: str | None = PageId,
    limit: int = Limit,
) -> Page[FileInfo]:
    """Matching files and directories, sorted by path; the cursor is the last path of the page."""
    after = paging.decode(page_id) if page_id else None
    results, last = await search.search(agent.workspace, path, search.Matcher(pattern, q), after, limit)
    return Page[FileInfo](results=results, next_page_id=None if last is None else paging.encode(last))


@router.get("/file-count", response_model=Count, responses=_UNDER_ERRORS, summary="Count files")
async def file_count(
    agent: Agent = Depends(get_agent),
    pattern: str | None = _Pattern,
    q: str | None = _Substring,
    path: str = _Under,
) -> Count:
    return Count(count=await search.count(agent.workspace, path, search.Matcher(pattern, q)))
