"""Routes of templates: list (anyone), build and remove (admins).

``POST /template?name=N&from=IMAGE`` builds a template from an image;
``POST /template?name=N&dockerfile=PATH`` from a Dockerfile in the build
context sent as the body (a tar, ``application/x-tar``, at most
``template_context_bytes``). The build's progress streams back as NDJSON:
``{"type": "progress", "line": ...}`` lines, then ``{"type": "done",
"template": {...}}`` or ``{"type": "error", "status": N, "detail": ...}``. A
build that fails before its first line (a bad name, an image that is not
local, no Dockerfile) answers a plain JSON error (4xx) instead, so a client
sees most mistakes as an ordinary status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from gateway.auth import Principal, admin_principal, current_principal
from gateway.context import context_of
from gateway.errors import BodyTooLarge, GatewayError, InvalidInput
from gateway.models import ErrorBody, Page, TemplateInfo
from gateway.runtimes.base import Template, TemplateSource
from sandbox_agent import paging
from sandbox_agent.routes.documented import Limit, PageId


class OwnBodyLimitRoute(APIRoute):
    """A route that bounds its body itself (``template_context_bytes``), not by ``max_body_bytes``
    (:class:`gateway.guard.RequestGuard` leaves it alone)."""

    own_body_limit = True


router = APIRouter(
    tags=["templates"],
    responses={401: {"model": ErrorBody, "description": "No or wrong API key"}},
)
_ADMINS: dict[int | str, dict[str, Any]] = {403: {"model": ErrorBody, "description": "Admins only"}}
_FINISHED = object()


def template_info(template: Template, pools: dict[str, int]) -> TemplateInfo:
    """``template`` as listed; ``pools``: the spares kept per template (gateway.pool)."""
    return TemplateInfo(
        name=template.name,
        description=template.description,
        built_from=template.built_from,
        created_at=template.created_at,
        size=template.size,
        pool=bool(pools.get(template.name)),
    )


@router.get("/template", response_model=Page[TemplateInfo], summary="List the templates")
async def list_templates(
    request: Request,
    page_id: str | None = PageId,
    limit: int = Limit,
    _: Principal = Depends(current_principal),
) -> Page[TemplateInfo]:
    """Every template a conversation may ask for (``POST /conversation {"template": name}``),
    the default first, then by name."""
    templates = await context_of(request).manager.runtime.templates()
    start = 0
    if page_id:
        try:
            start = int(paging.decode(page_id))
        except ValueError:
            raise InvalidInput("page_id is not a cursor this gateway handed out") from None
    chunk = templates[start : start + limit]
    more = start + limit < len(templates)
    return Page[TemplateInfo](
        results=[template_info(template, context_of(request).manager.pool.sizes) for template in chunk],
        next_page_id=paging.encode(str(start + limit)) if more else None,
    )


async def build_template(
    request: Request,
    name: str = Query(..., max_length=63, description="The template's name (lower case)."),
    image: str | None = Query(None, alias="from", max_length=512, description="Build from this image."),
    dockerfile: str | None = Query(
        None, max_length=512, description="Build from this Dockerfile of the context (the body, a tar)."
    ),
    description: str = Query("", max_length=500),
    _: Principal = Depends(admin_principal),
) -> Response:
    """Build (or rebuild) the template ``name`` from an image (``from``) or from a Dockerfile
    and the build context sent as the body; streams the build's progress (NDJSON)."""
    context = context_of(request)
    if (image is None) == (dockerfile is None):
        raise InvalidInput("give one of 'from' (an image) and 'dockerfile' (with the context as the body)")
    body = await _context_body(request, context.settings.template_context_bytes) if dockerfile else None
    source = TemplateSource(image=image, context=body, dockerfile=dockerfile or "Dockerfile",
                            description=description)  # fmt: skip
    lines: asyncio.Queue[object] = asyncio.Queue()

    async def progress(line: str) -> None:
        await lines.put(line)

    build = asyncio.create_task(context.manager.runtime.build_template(name, source, progress))
    build.add_done_callback(lambda _: lines.put_nowait(_FINISHED))
    try:
        first = await lines.get()
    except asyncio.CancelledError:  # the client left before the first line
        build.cancel()
        raise
    failure = build.exception() if first is _FINISHED else None
    if failure is not None:
        raise failure  # an answer of its own (a 4xx) before any line
    return StreamingResponse(
        _stream(first, lines, build, context.manager.pool.sizes), media_type="application/x-ndjson"
    )


router.add_api_route(
    "/template",
    build_template,
    methods=["POST"],
    route_class_override=OwnBodyLimitRoute,
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "The build's progress, then its end"},
        413: {"model": ErrorBody, "description": "The build context is too large"},
        422: {"model": ErrorBody, "description": "A bad name, an image that is not local, no Dockerfile"},
        **_ADMINS,
    },
    summary="Build a template (admin)",
)


async def _stream(
    first: object, lines: asyncio.Queue[object], build: asyncio.Task[Template], pools: dict[str, int]
) -> AsyncIterator[bytes]:
    item = first
    try:
        while item is not _FINISHED:
            yield _line({"type": "progress", "line": str(item)})
            item = await lines.get()
        error = build.exception()
        if error is None:
            yield _line(
                {
                    "type": "done",
                    "template": template_info(build.result(), pools).model_dump(mode="json"),
                }
            )
        else:
            status = error.status if isinstance(error, GatewayError) else 500
            detail = error.detail if isinstance(error, GatewayError) else "internal error in the gateway"
            yield _line({"type": "error", "status": status, "detail": detail})
    finally:
        if not build.done():  # the client went away: the engine's build is not ours to wait for
            build.cancel()
            with contextlib.suppress(BaseException):
                await build


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"


async def _context_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the build context is larger than template_context_bytes ({limit} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the build context is larger than template_context_bytes ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


@router.delete(
    "/template/{name}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"model": ErrorBody, "description": "No such template"},
        409: {"model": ErrorBody, "description": "Sandboxes run it: end their conversations first"},
        422: {"model": ErrorBody, "description": "The default template, which is never removed"},
        **_ADMINS,
    },
    summary="Remove a template (admin)",
)
async def remove_template(request: Request, name: str, _: Principal = Depends(admin_principal)) -> Response:
    """Refused (409) while any conversation's sandbox runs the template."""
    await context_of(request).manager.runtime.remove_template(name)
    return Response(status_code=204)
