"""HTTP and WebSocket routes: thin wiring from the wire to the agent's components.

Each module declares an ``APIRouter``; :func:`sandbox_agent.app.create_app`
hands their routes to the app as they are (see there why not ``include_router``),
so everything a route needs in the OpenAPI document (``ERRORS``) is set on its
router.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from sandbox_agent.agent import Agent
from sandbox_agent.protocol import ErrorBody

#: The error answers every route may give, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 507)
}


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
