"""The agent's routes served without FastAPI (sandbox_agent.routes.serving) answer as FastAPI
does with the same declarations, and the agent's process never imports FastAPI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sandbox_agent import errors
from sandbox_agent.app import ROUTERS, create_app
from sandbox_agent.protocol import TOKEN_HEADER
from sandbox_agent.routes.documented import api_router
from sandbox_agent.settings import AgentSettings
from tests.sandbox_agent.agent_helpers import TOKEN

ZERO = "00000000-0000-0000-0000-000000000000"
#: Requests whose answers are decided before any endpoint runs (or by a stopped agent's
#: endpoint alike): (method, path, request options).
BAD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/event?limit=0", {}),
    ("GET", "/event?limit=abc&after_seq=-5&task_id=zz", {}),
    ("GET", "/task?status=DONE&status=nope&limit=1000", {}),
    ("GET", "/task/nope", {}),
    ("GET", "/event/nope", {}),
    ("GET", "/terminal/nope", {}),
    ("GET", "/file-search?limit=", {}),
    ("GET", "/port/0/x", {}),
    ("GET", "/port/abc/x", {}),
    ("POST", "/event", {}),
    ("POST", "/event", {"content": b"{bad", "headers": {"content-type": "application/json"}}),
    ("POST", "/event", {"content": b"{bad", "headers": {"content-type": "text/plain"}}),
    ("POST", "/event", {"content": b"\xff\xfe\xfa", "headers": {"content-type": "application/json"}}),
    (
        "POST",
        "/event",
        {"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}},
    ),
    ("POST", "/event", {"json": []}),
    ("POST", "/event", {"json": {"detail": {"type": "ConversationStatusUpdate"}}}),
    ("POST", "/task", {"json": {"runnable": {"type": "Nope"}}}),
    ("POST", "/task?wait=maybe", {"json": {"runnable": {"type": "Shell", "command": "true"}}}),
    ("POST", "/status", {"json": {"status": "NOPE", "extra": 1}}),
    ("POST", "/forked", {"json": {}}),
    ("POST", "/claim", {"json": {}}),
    ("GET", "/claim", {}),
    ("DELETE", "/claim", {}),
    ("POST", f"/task/{ZERO}/stdin?eof=maybe", {}),
    ("POST", "/upload/x?overwrite=maybe", {}),
    ("PATCH", "/event", {}),
    ("POST", "/ready", {}),
    ("GET", "/nope", {}),
    ("GET", "/event", {"headers": {TOKEN_HEADER: "wrong"}}),
]


def _fastapi_app(settings: AgentSettings) -> FastAPI:
    """The same declarations served by FastAPI, as the agent served them before."""
    served = create_app(settings)
    app = FastAPI(routes=[route for router in ROUTERS for route in api_router(router).routes])
    app.state.agent = served.state.agent
    errors.install(app)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return errors.error_response(422, errors.explain_validation(list(exc.errors())))

    app.add_exception_handler(RequestValidationError, invalid)  # what the agent answered
    return app


async def _answers(url: str) -> list[tuple[int, Any]]:
    found: list[tuple[int, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers={TOKEN_HEADER: TOKEN}) as client:
        for method, path, options in BAD_REQUESTS:
            response = await client.request(method, path, **options)
            found.append((response.status_code, response.json()))
    return found


async def test_bad_requests_get_fastapis_answers(serve: Callable[..., Any], settings: AgentSettings) -> None:
    async with serve(create_app(settings)) as url:
        ours = await _answers(url)
    async with serve(_fastapi_app(settings)) as url:
        theirs = await _answers(url)
    for request, mine, expected in zip(BAD_REQUESTS, ours, theirs, strict=True):
        assert mine == expected, request
    assert {status for status, _ in ours} >= {400, 401, 404, 405, 422}


def test_the_agent_process_imports_no_fastapi(tmp_path: Path) -> None:
    """What ``convoy-agent`` holds once serving: no FastAPI (nor its telemetry), no click."""
    script = (
        "import sys\n"
        "from sandbox_agent import __main__ as cli, lean\n"
        "cli._without_pydantic_v1()\n"
        "lean.uvicorn_server()\n"
        "from sandbox_agent.app import create_app\n"
        "from sandbox_agent.settings import AgentSettings\n"
        f"create_app(AgentSettings(workspace={str(tmp_path / 'ws')!r}, state_dir={str(tmp_path / 'st')!r}))\n"
        "import uvicorn.lifespan.on, uvicorn.protocols.http.h11_impl, uvicorn.protocols.websockets.auto\n"
        "print(sorted({name.split('.')[0] for name in sys.modules}"
        " & {'fastapi', 'opentelemetry', 'click', 'multiprocessing'}))\n"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


async def test_openapi_is_written_on_demand(serve: Callable[..., Any], settings: AgentSettings) -> None:
    async with (
        serve(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, headers={TOKEN_HEADER: TOKEN}) as client,
    ):
        document = (await client.get("/openapi.json")).json()
        assert (await client.get("/openapi.json")).json() == document
    assert document["info"]["title"] == "convoy sandbox agent"
    assert "/task" in document["paths"] and "/openapi.json" not in document["paths"]
