"""HTTP and WebSocket routes: thin wiring from the wire to the agent's components.

Each module declares a :class:`~sandbox_agent.routes.decl.Router`, framework-free:
:mod:`sandbox_agent.routes.serving` serves it with Starlette, and
:mod:`sandbox_agent.routes.documented` gives FastAPI the same declarations for
the OpenAPI documents. Everything a route needs in a document (errors, operation
ids) is set on its router or the route itself.

The per-conversation routes (:data:`sandbox_agent.routes.proxied.PROXIED_ROUTERS`)
are also the gateway's declaration of them: their signatures, models, status
codes, summaries, tags and documented errors are what the gateway's OpenAPI
document shows (:mod:`gateway.routes.proxied`). Write them for the API's users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox_agent.agent import Agent
from sandbox_agent.protocol import TOKEN_HEADER, ErrorBody
from sandbox_agent.routes.decl import Responses as Responses  # re-exported: the route modules use it
from sandbox_agent.routes.decl import Router

if TYPE_CHECKING:
    from fastapi.routing import APIRoute


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


def token_router(tag: str) -> Router:
    """A router whose routes want the agent's token and document :data:`ERRORS`, under the
    OpenAPI tag ``tag`` (every route is named by :func:`operation_id`)."""
    return Router(tags=[tag], token=True, responses=ERRORS)


async def get_agent(request: Request) -> Agent:
    # async: FastAPI (documents, the gateway's declarations) would run a plain ``def``
    # dependency on a worker thread for a mere attribute read.
    agent: Agent = request.app.state.agent
    return agent


def json_raw(raw: bytes, status_code: int = 200) -> Response:
    """A response whose body is already JSON (stored envelopes are sent as they are)."""
    return Response(raw, status_code=status_code, media_type="application/json")


def json_page(items: list[bytes], next_page_id: str | None) -> Response:
    cursor = b"null" if next_page_id is None else b'"%s"' % next_page_id.encode()
    return json_raw(b'{"results":[' + b",".join(items) + b'],"next_page_id":' + cursor + b"}")
