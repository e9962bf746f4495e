"""Every per-conversation route of the sandbox agent, proxied.

The routes are declared once, by the agent: this module re-declares each route
of :data:`sandbox_agent.routes.proxied.PROXIED_ROUTERS` under
``/conversation/{conversation_id}`` - the agent endpoint's signature (less its
dependency on the agent itself) plus the ``conversation_id`` path parameter, its
response model, status code, summary, description, tags, documented errors and
``openapi_extra`` - and adds the gateway's own errors (401, 404, 409, 502, 503, 504).
So ``/openapi.json`` and ``/docs`` describe them completely, and cannot drift
from what the agent accepts (tests/gateway/test_docs.py compares the two).
Routes not in that list (the agent's ``/status``, ``/openapi.json``, ``/health``,
``/ready``, ``/ws``) do not exist here, and nothing else can reach them: the
upstream path is built from the decoded route parameters only
(:class:`gateway.upstream.UpstreamPath`).

All of them are served alike by :class:`ProxyRoute`: authenticate, find the
caller's conversation (another user's is 404), then stream the request to the
agent and the agent's answer back (:mod:`gateway.proxy`). Parameters and bodies
are validated once, by the agent, with the same declarations (its 422 answers
come back as they are): the gateway does not parse what it forwards, which
keeps a proxied request close to the cost of a direct one. The declarations'
bodies never run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response, params
from fastapi.routing import APIRoute

from gateway.auth import Principal, current_principal
from gateway.context import context_of
from gateway.errors import NotFound, UpstreamUnreachable
from gateway.models import ErrorBody
from gateway.upstream import UpstreamPath
from sandbox_agent.routes import get_agent
from sandbox_agent.routes.proxied import PROXIED_ROUTERS

PREFIX = "/conversation/{conversation_id}"

#: The gateway's own answers, on every proxied route (over the agent's of the same status).
_GATEWAY_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No or wrong API key"},
    404: {"model": ErrorBody, "description": "Unknown conversation (or another user's), or unknown item"},
    414: {"model": ErrorBody, "description": "The path and query are too long"},
    431: {"model": ErrorBody, "description": "The request's headers are too large"},
    502: {"model": ErrorBody, "description": "The sandbox could not be reached"},
    409: {"model": ErrorBody, "description": "The conversation ended (ERROR or STOPPING)"},
    503: {"model": ErrorBody, "description": "The conversation is still STARTING after the start timeout"},
    504: {"model": ErrorBody, "description": "The sandbox did not answer in time"},
}


async def forward_request(
    request: Request, upstream: UpstreamPath, download: bool, principal: Principal | None = None
) -> Response:
    """Auth, ownership, READY, then the agent's answer (see the module docstring). ``principal``:
    the caller when a layer in front authenticated it already (never twice per request)."""
    context = context_of(request)
    if principal is None:
        principal = current_principal(request)
    manager = context.manager
    raw_id = request.path_params["conversation_id"]
    try:
        conversation_id = UUID(raw_id)
    except ValueError:
        raise NotFound(f"conversation {raw_id} not found") from None
    record = await manager.get(conversation_id, principal)
    handle = await manager.ready_handle(record)
    manager.touch(record)
    try:
        with manager.pausing.watching(record):  # paused through another gateway: resumed
            return await context.proxy.forward(
                request,
                handle,
                path=upstream.build(request.path_params),
                download=download,
                activity=lambda: manager.connection(record),
            )
    except UpstreamUnreachable:
        if await manager.gone_elsewhere(record):  # deleted through another gateway a moment ago
            raise NotFound(f"conversation {conversation_id} not found") from None
        raise


class ProxyRoute(APIRoute):
    """A route documented by its endpoint's signature and served by :func:`forward_request`
    at the agent's route of the same path less :data:`PREFIX`."""

    #: The agent's path of this route, and whether it is a file's content (see Proxy.forward).
    upstream: UpstreamPath
    download: bool

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        upstream = self.upstream = UpstreamPath(self.path.removeprefix(PREFIX))
        download = self.download = upstream.template.startswith("/file-content/")

        async def handler(request: Request) -> Response:
            return await forward_request(request, upstream, download)

        return handler


def _is_agent_dependency(parameter: inspect.Parameter) -> bool:
    default = parameter.default
    return isinstance(default, params.Depends) and default.dependency is get_agent


def _declaration(agent_endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for ``agent_endpoint`` that FastAPI documents like it: the same parameters
    (annotations evaluated where the endpoint was written), less the agent dependency,
    after ``conversation_id``. It is never called: :class:`ProxyRoute` serves the route."""
    signature = inspect.signature(agent_endpoint, eval_str=True)
    conversation_id = inspect.Parameter(
        "conversation_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=UUID
    )
    kept = [p for p in signature.parameters.values() if not _is_agent_dependency(p)]

    async def served_by_proxy_route(*args: Any, **kwargs: Any) -> Response:
        raise NotImplementedError  # served by ProxyRoute

    served_by_proxy_route.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[conversation_id, *kept], return_annotation=Response
    )
    served_by_proxy_route.__name__ = served_by_proxy_route.__qualname__ = agent_endpoint.__name__
    served_by_proxy_route.__doc__ = agent_endpoint.__doc__
    return served_by_proxy_route


def redeclare(agent_route: APIRoute) -> dict[str, Any]:
    """``add_api_route`` arguments that re-declare ``agent_route`` (see the module docstring);
    :mod:`gateway.routes.ports` documents the preview routes with them too."""
    return {
        "path": agent_route.path,
        "endpoint": _declaration(agent_route.endpoint),
        "methods": sorted(agent_route.methods or ()),
        "name": agent_route.name,
        "response_model": agent_route.response_model,
        "status_code": agent_route.status_code,
        "response_class": agent_route.response_class,
        "tags": list(agent_route.tags),
        "summary": agent_route.summary,
        "description": agent_route.description,
        "response_description": agent_route.response_description,
        "responses": {**agent_route.responses, **_GATEWAY_ERRORS},
        "deprecated": agent_route.deprecated,
        "include_in_schema": agent_route.include_in_schema,
        "openapi_extra": agent_route.openapi_extra,
    }


def _build_router() -> APIRouter:
    built = APIRouter(prefix=PREFIX, route_class=ProxyRoute)
    for agent_router in PROXIED_ROUTERS:
        for route in agent_router.routes:
            assert isinstance(route, APIRoute), f"not an HTTP route: {route!r}"
            built.add_api_route(**redeclare(route))
    return built


router = _build_router()
