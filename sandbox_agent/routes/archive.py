"""The workspace as one tar archive (gateway only, never proxied): see sandbox_agent.archives."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse

from sandbox_agent.agent import Agent
from sandbox_agent.archives import archive_stream, fill
from sandbox_agent.routes import ERRORS, _error, get_agent, token_router
from sandbox_agent.routes.decl import Depends

router = token_router("system")


class Filled(BaseModel):
    """What ``PUT /workspace-archive`` placed."""

    members: int


@router.get(
    "/workspace-archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "The workspace as a tar"}},
)
async def get_archive(agent: Agent = Depends(get_agent)) -> StreamingResponse:
    """Gateway only: the whole workspace as an uncompressed tar, streamed (snapshots, forks)."""
    return StreamingResponse(archive_stream(agent.workspace.root), media_type="application/x-tar")


@router.put(
    "/workspace-archive",
    response_model=Filled,
    responses={
        **ERRORS,
        413: _error("The archive is too large"),
        422: _error("No tar, or a member would leave the workspace"),
        507: _error("The sandbox's disk is full"),
    },
)
async def put_archive(request: Request, agent: Agent = Depends(get_agent)) -> Filled:
    """Gateway only: extract a tar into the workspace (a snapshot's or a fork's, before READY)."""
    placed = await fill(
        agent.workspace.root,
        agent.settings.upload_staging_dir,
        request.stream(),
        agent.settings.max_upload_bytes,
    )
    return Filled(members=placed)
