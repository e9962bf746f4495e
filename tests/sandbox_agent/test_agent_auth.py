"""The agent token: every route but /health and /ready; WebSockets closed with 4401."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from agent_helpers import Served, make_settings, served

from sandbox_agent.protocol import TOKEN_HEADER, WS_CLOSE_UNAUTHORIZED


@pytest.mark.parametrize("headers", [{}, {TOKEN_HEADER: "wrong"}, {TOKEN_HEADER: ""}])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/event"), ("POST", "/task"), ("GET", "/file/x"), ("GET", "/agent-info"), ("POST", "/status")],
)
async def test_protected_routes_need_the_token(
    agent: Served, headers: dict[str, str], method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=agent.url, headers=headers) as client:
        response = await client.request(method, path, json={})
    assert response.status_code == 401
    assert "detail" in response.json()


async def test_health_and_ready_need_no_token(agent: Served) -> None:
    async with httpx.AsyncClient(base_url=agent.url) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).json() == {"status": "ready"}


@pytest.mark.parametrize("headers", [{}, {TOKEN_HEADER: "wrong"}])
async def test_websocket_without_the_token_is_closed_4401(agent: Served, headers: dict[str, str]) -> None:
    async with websockets.connect(agent.ws_url, additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == WS_CLOSE_UNAUTHORIZED


async def test_an_unprotected_agent_serves_without_a_token(serve: Callable[..., Any], tmp_path: Path) -> None:
    settings = make_settings(tmp_path, token=None, unprotected=True)
    async with served(serve, settings) as running, httpx.AsyncClient(base_url=running.url) as bare:
        assert (await bare.get("/event")).status_code == 200


async def test_a_token_less_agent_that_is_not_unprotected_refuses_everything(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, token=None)
    async with served(serve, settings) as running, httpx.AsyncClient(base_url=running.url) as bare:
        assert (await bare.get("/event")).status_code == 401
