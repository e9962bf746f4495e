"""Small request bodies (gateway.proxy: declared length up to LEAN_BODY_BYTES) go to the agent
through the lean client, read whole; larger ones stream through aiohttp. Both arrive intact,
and the agent's answers (its 422, a stream) come back as they are."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gw_helpers import USER_KEYS, Serve, auth, base_settings, keyed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from test_proxy import StandIn, StandInRuntime

from gateway.app import create_app
from gateway.proxy import LEAN_BODY_BYTES
from gateway.server import uvicorn_options

ALICE = auth(USER_KEYS["alice"])


class TaskAgent(StandIn):
    """A stand-in agent whose ``POST /task`` checks its JSON body and streams two records."""

    def app(self) -> Starlette:
        base = super().app()

        async def task(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                return JSONResponse({"detail": [{"msg": "JSON decode error"}]}, status_code=422)

            async def records() -> AsyncIterator[bytes]:
                yield (
                    json.dumps({"size": len(raw), "wait": request.query_params.get("wait")}).encode() + b"\n"
                )
                yield json.dumps({"echo": body["x"][:8]}).encode() + b"\n"

            return StreamingResponse(records(), status_code=201, media_type="application/jsonl")

        base.router.routes.insert(0, Route("/task", task, methods=["POST"]))
        return base


@pytest.fixture
async def gateway(serve: Serve, tmp_path: Any) -> AsyncIterator[str]:
    agent = TaskAgent()
    async with serve(agent.app()) as upstream:
        settings = base_settings(tmp_path, **keyed())
        app = create_app(settings, StandInRuntime(upstream, agent))  # type: ignore[arg-type]
        async with serve(app, **uvicorn_options(settings)) as url:
            yield url


@pytest.mark.parametrize("size", [10, LEAN_BODY_BYTES - 20, LEAN_BODY_BYTES * 2])
async def test_a_task_body_reaches_the_agent_whole(gateway: str, size: int) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        body = json.dumps({"x": "y" * size}).encode()
        for _ in range(3):  # on a reused connection too
            answer = await client.post(
                f"/conversation/{cid}/task?wait=true",
                content=body,
                headers={**ALICE, "content-type": "application/json"},
            )
            assert answer.status_code == 201, answer.text
            first, second = (json.loads(line) for line in answer.text.splitlines())
            assert first == {"size": len(body), "wait": "true"} and second == {"echo": "yyyyyyyy"}


async def test_malformed_json_gets_the_agents_422(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        answer = await client.post(f"/conversation/{cid}/task", content=b"{not json", headers=ALICE)
        assert answer.status_code == 422 and answer.json()["detail"][0]["msg"] == "JSON decode error"
        anonymous = await client.post(f"/conversation/{cid}/task", content=b"{}")
        assert anonymous.status_code == 401
        bob = await client.post(f"/conversation/{cid}/task", content=b"{}", headers=auth(USER_KEYS["bob"]))
        assert bob.status_code == 404
