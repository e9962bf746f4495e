"""Liveness, readiness, agent info, and the gateway-only routes (status report, OpenAPI).

Three routers: ``public`` (no token: /health, /ready), ``proxied`` (what the
gateway serves to users: /agent-info) and ``router`` (token; the gateway's own
calls, never proxied: /status, /activity, /last-seq, /freeze, /thaw, /openapi.json).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from sandbox_agent.agent import Agent
from sandbox_agent.errors import error_response
from sandbox_agent.protocol import (
    Activity,
    AgentInfo,
    ConversationStatus,
    ConversationStatusUpdate,
    Event,
    Forked,
)
from sandbox_agent.routes import get_agent, json_raw, token_router
from sandbox_agent.routes.decl import Depends, Router

public = Router(tags=["system"])
proxied = token_router("agent")
router = token_router("system")


class StatusReport(BaseModel):
    """Body of ``POST /status``: the gateway says why the conversation is going away, or that
    it is about to be paused (PAUSED) or was resumed (READY)."""

    model_config = ConfigDict(extra="forbid")
    status: Literal[
        ConversationStatus.STOPPING,
        ConversationStatus.ERROR,
        ConversationStatus.PAUSED,
        ConversationStatus.READY,
    ]
    reason: str | None = Field(None, max_length=2000)


@public.get("/health", responses={403: {"description": "a spare, not claimed yet"}})
async def health(agent: Agent = Depends(get_agent)) -> Response:
    """The process answers (403 for a spare, which answers only /ready and /claim)."""
    if agent.spare:
        return error_response(403, "this sandbox is a spare: it serves no conversation yet")
    return json_raw(b'{"status":"ok"}')


@public.get("/ready", responses={503: {"description": "starting or stopping"}})
async def ready(agent: Agent = Depends(get_agent)) -> Response:
    """200 once the event log is loaded and READY recorded (a spare: once it can be claimed,
    saying ``"spare": true``); 503 while stopping."""
    if not agent.ready:
        return error_response(503, "not ready")
    return json_raw(b'{"status":"ready","spare":true}' if agent.spare else b'{"status":"ready"}')


@proxied.get("/agent-info", response_model=AgentInfo, summary="What this sandbox can run")
async def agent_info(agent: Agent = Depends(get_agent)) -> Response:
    return json_raw(agent.info_json())


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> dict[str, Any]:
    """The agent's OpenAPI document (built on first request)."""
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.post("/status", status_code=201, response_model=Event)
async def report_status(report: StatusReport, agent: Agent = Depends(get_agent)) -> Response:
    """Gateway only (never proxied): record a ConversationStatusUpdate, e.g. STOPPING before a delete.
    STOPPING is recorded once: a second report (two gateways reaping or deleting it at once)
    answers 200 with the event already recorded, so followers see one end."""
    if report.status is ConversationStatus.STOPPING and agent.stopping_event is not None:
        return json_raw(agent.stopping_event.raw, 200)
    stored = agent.events.append(
        ConversationStatusUpdate(
            status=report.status, conversation_id=agent.conversation_id, reason=report.reason
        )
    )
    if report.status is ConversationStatus.STOPPING:
        agent.stopping_event = stored
    return json_raw(stored.raw, 201)


@router.post("/forked", status_code=201, response_model=Event)
async def report_forked(origin: Forked, agent: Agent = Depends(get_agent)) -> Response:
    """Gateway only (never proxied): record that this conversation is a fork (its first
    event after READY: the gateway sends it before any client can reach the sandbox)."""
    stored = agent.events.append(origin)
    return json_raw(stored.raw, 201)


@router.get("/activity", response_model=Activity)
async def activity(agent: Agent = Depends(get_agent)) -> Activity:
    """Gateway only (never proxied): how long this sandbox has served nobody (any gateway's
    requests count; see sandbox_agent.activity), for every gateway's idle reaper."""
    return agent.activity.report()


class Frozen(BaseModel):
    """What ``POST /freeze`` or ``/thaw`` did: the processes it reached, those it could not stop."""

    frozen: bool
    processes: int
    unstopped: int


@router.post("/freeze", response_model=Frozen)
async def freeze(agent: Agent = Depends(get_agent)) -> Frozen:
    """Gateway only (never proxied): SIGSTOP every process the agent started (tasks, terminals,
    what they started) and answer once they are stopped (sandbox_agent.freezer); the agent
    itself answers on. For a runtime whose engine cannot freeze a sandbox (swarm)."""
    report = await agent.freezer.freeze()
    return Frozen(frozen=report.frozen, processes=report.processes, unstopped=report.unstopped)


@router.post("/thaw", response_model=Frozen)
async def thaw(agent: Agent = Depends(get_agent)) -> Frozen:
    """Gateway only (never proxied): SIGCONT what ``/freeze`` stopped."""
    report = await agent.freezer.thaw()
    return Frozen(frozen=report.frozen, processes=report.processes, unstopped=report.unstopped)


@router.get("/last-seq")
async def last_seq(agent: Agent = Depends(get_agent)) -> dict[str, int]:
    """Gateway only (never proxied): the seq of the newest event (what a fork names)."""
    return {"seq": agent.events.last_seq}
