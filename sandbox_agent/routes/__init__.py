"""HTTP and WebSocket routes: thin wiring from the wire to the agent's components."""

from __future__ import annotations

from fastapi import Request, Response

from sandbox_agent.agent import Agent


def get_agent(request: Request) -> Agent:
    agent: Agent = request.app.state.agent
    return agent


def json_raw(raw: bytes, status_code: int = 200) -> Response:
    """A response whose body is already JSON (stored envelopes are sent as they are)."""
    return Response(raw, status_code=status_code, media_type="application/json")


def json_page(items: list[bytes], next_page_id: str | None) -> Response:
    cursor = b"null" if next_page_id is None else b'"%s"' % next_page_id.encode()
    return json_raw(b'{"results":[' + b",".join(items) + b'],"next_page_id":' + cursor + b"}")
