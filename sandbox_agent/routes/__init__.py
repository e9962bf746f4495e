"""HTTP and WebSocket routes: thin wiring from the wire to the agent's components.

Each module declares an ``APIRouter``; :func:`sandbox_agent.app.create_app`
hands their routes to the app as they are (see there why not ``include_router``),
so everything a route needs in the OpenAPI document (errors, operation ids) is
set on its router or the route itself.

The per-conversation routes (:data:`sandbox_agent.routes.proxied.PROXIED_ROUTERS`)
are also the gateway's declaration of them: their signatures, models, status
codes, summaries, tags and documented errors are what the gateway's OpenAPI
document shows (:mod:`gateway.routes.proxied`). Write them for the API's users.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from sandbox_agent.agent import Agent
from sandbox_agent.auth import require_token
from sandbox_agent.protocol import TOKEN_HEADER, ErrorBody

Responses = dict[int | str, dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: The error answers every route may give, for the OpenAPI document.
ERRORS: Responses = {
    400: _error("The request could not be read (e.g. malformed JSON)"),
    401: _error(f"Missing or wrong {TOKEN_HEADER}"),
    404: _error("Unknown item"),
    # Field errors as a list, or a sentence (a bad cursor).
    422: _error("Invalid parameters or body"),
}
#: Routes on a workspace path, besides :data:`ERRORS`.
PATH_ERRORS: Responses = {
    400: _error("The path leaves the workspace or cannot be a file name"),
    403: _error("The path leaves the workspace"),
    409: _error("It exists already"),
    507: _error("The sandbox's disk is full: nothing was written"),
}
#: Routes that record something in the event log (a new event, a new task), besides :data:`ERRORS`.
STORAGE_ERRORS: Responses = {
    413: _error("The body is too large"),
    507: _error("The sandbox's disk is full: nothing was recorded"),
}


def operation_id(route: APIRoute) -> str:
    """The OpenAPI ``operationId`` of a route: its function's name (``list_events``).
    Names are unique per document (a test says so), so clients get clean method names."""
    return route.name


def token_router(tag: str) -> APIRouter:
    """A router whose routes want the agent's token, document :data:`ERRORS` and are
    named by :func:`operation_id`, under the OpenAPI tag ``tag``."""
    return APIRouter(
        tags=[tag],
        dependencies=[Depends(require_token)],
        responses=ERRORS,
        generate_unique_id_function=operation_id,
    )


async def get_agent(request: Request) -> Agent:
    # async: FastAPI would run a plain ``def`` dependency on a worker thread (one more
    # thread and its malloc arena, idle for the process's life) for a mere attribute read.
    agent: Agent = request.app.state.agent
    return agent


def json_raw(raw: bytes, status_code: int = 200) -> Response:
    """A response whose body is already JSON (stored envelopes are sent as they are)."""
    return Response(raw, status_code=status_code, media_type="application/json")


def json_page(items: list[bytes], next_page_id: str | None) -> Response:
    cursor = b"null" if next_page_id is None else b'"%s"' % next_page_id.encode()
    return json_raw(b'{"results":[' + b",".join(items) + b'],"next_page_id":' + cursor + b"}")
