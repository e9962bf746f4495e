"""Seeing the gateway: ``GET /metrics`` (Prometheus) and ``GET /conversation/{id}/usage``.

``/metrics`` answers an admin key, or ``CONVOY_METRICS_KEY`` as a bearer token
(a scraper needs no admin rights); anyone else gets 401 (no or wrong key) or
403 (a user's key). Usage is measured by the runtime at the time of asking
(:meth:`gateway.runtimes.base.Runtime.usage`).
"""

from __future__ import annotations

import dataclasses
import hmac
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, Response

from gateway.auth import current_principal
from gateway.context import context_of
from gateway.errors import NotReady
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.models import ConversationUsage, ErrorBody

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No or wrong API key"},
}


def metrics_of(request: Request) -> GatewayMetrics:
    return cast(GatewayMetrics, request.app.state.metrics)


def _allowed(request: Request) -> None:
    wanted = context_of(request).settings.metrics_key
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if wanted and scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), wanted.encode()):
        return
    if not current_principal(request).is_admin:
        raise HTTPException(403, "metrics are for admins and the metrics key")


@router.get(
    "/metrics",
    tags=["gateway"],
    summary="Prometheus metrics (admin or the metrics key)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text exposition format"},
        **_ERRORS,
        403: {"model": ErrorBody, "description": "Neither an admin key nor the metrics key"},
    },
)
async def metrics(request: Request) -> Response:
    _allowed(request)
    return Response(metrics_of(request).exposition(), media_type=CONTENT_TYPE)


@router.get(
    "/conversation/{conversation_id}/usage",
    tags=["conversations"],
    response_model=ConversationUsage,
    summary="What the conversation's sandbox uses now",
    responses={
        **_ERRORS,
        404: {"model": ErrorBody, "description": "Unknown, or another user's"},
        409: {"model": ErrorBody, "description": "The conversation is not READY, or its sandbox stopped"},
    },
)
async def conversation_usage(request: Request, conversation_id: UUID) -> ConversationUsage:
    """CPU seconds, memory now and at its peak, the workspace's size on disk, network
    bytes in and out, processes: measured from the runtime (cgroup and engine stats on
    Docker, ``/proc`` on the process runtime), at the time of asking."""
    context = context_of(request)
    record = await context.manager.get(conversation_id, current_principal(request))
    await context.manager.ready_handle(record)
    runtime = context.manager.runtime
    found = await runtime.usage(conversation_id)
    if found is None:
        raise NotReady(f"the sandbox of conversation {conversation_id} is not running")
    return ConversationUsage(
        conversation_id=conversation_id,
        measured_at=datetime.now(UTC),
        runtime=runtime.name,
        **dataclasses.asdict(found),
    )
