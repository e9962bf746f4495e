"""Files in the workspace: mkdir, touch, info, delete, upload, download, search, count."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from sandbox_agent import paging, search
from sandbox_agent.agent import Agent
from sandbox_agent.auth import require_token
from sandbox_agent.downloads import file_response
from sandbox_agent.protocol import Count, FileInfo, Page
from sandbox_agent.routes import ERRORS, get_agent
from sandbox_agent.uploads import Upload

router = APIRouter(tags=["files"], dependencies=[Depends(require_token)], responses=ERRORS)


@router.post("/dir/{path:path}", status_code=201, response_model=FileInfo)
async def make_dir(path: str, agent: Agent = Depends(get_agent)) -> FileInfo:
    """Create a directory (and missing parents); 409 when it exists."""
    return await agent.workspace.mkdir(path)


@router.post("/file/{path:path}", status_code=201, response_model=FileInfo)
async def touch_file(path: str, agent: Agent = Depends(get_agent)) -> FileInfo:
    """Create an empty file (and missing parents); 409 when it exists."""
    return await agent.workspace.touch(path)


@router.get("/file/{path:path}", response_model=FileInfo)
async def file_info(path: str, agent: Agent = Depends(get_agent)) -> FileInfo:
    return await agent.workspace.info(path)


@router.delete("/file/{path:path}", status_code=204)
async def delete_file(path: str, agent: Agent = Depends(get_agent)) -> Response:
    """Delete a file, a symlink (not its target) or a directory with its contents."""
    await agent.workspace.delete(path)
    return Response(status_code=204)


@router.post("/upload/{parent_path:path}", status_code=201, response_model=list[FileInfo])
async def upload(
    parent_path: str,
    request: Request,
    overwrite: bool = Query(True, description="false: 409 when a file exists."),
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
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a range"}},
)
async def file_content(
    path: str,
    agent: Agent = Depends(get_agent),
    range_header: str | None = Header(None, alias="range"),
    if_range: str | None = Header(None, alias="if-range"),
) -> Response:
    """The file's bytes, streamed; one HTTP Range honoured (206), 416 past the end."""
    return await file_response(agent.workspace, path, range_header, if_range)


@router.get("/file-search", response_model=Page[FileInfo])
async def file_search(
    agent: Agent = Depends(get_agent),
    pattern: str | None = Query(None, description="Glob on the workspace-relative path."),
    q: str | None = Query(None, description="Case-insensitive substring of the path."),
    path: str = Query("", description="Only inside this directory."),
    page_id: str | None = Query(None),
    limit: int = Query(paging.DEFAULT_PAGE_LIMIT, ge=1, le=paging.MAX_PAGE_LIMIT),
) -> Page[FileInfo]:
    """Matching files and directories, sorted by path; the cursor is the last path of the page."""
    after = paging.decode(page_id) if page_id else None
    results, last = await search.search(agent.workspace, path, search.Matcher(pattern, q), after, limit)
    return Page[FileInfo](results=results, next_page_id=None if last is None else paging.encode(last))


@router.get("/file-count", response_model=Count)
async def file_count(
    agent: Agent = Depends(get_agent),
    pattern: str | None = Query(None),
    q: str | None = Query(None),
    path: str = Query(""),
) -> Count:
    return Count(count=await search.count(agent.workspace, path, search.Matcher(pattern, q)))
