"""gateway.agent_transport: an agent at an ``http+unix://`` base_url answers the gateway's httpx,
aiohttp and WebSocket clients as one on TCP does (a real uvicorn on a real Unix socket)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from yarl import URL

from gateway.agent_transport import (
    AgentConnector,
    AgentTransport,
    connect_websocket,
    host_header,
    socket_of,
    unix_url,
)


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse(
        {"path": request.url.path, "query": request.url.query, "host": request.headers["host"]}
    )


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(f"hello {websocket.url.path}?{websocket.url.query}")
    await websocket.close()


@pytest.fixture
async def agent_socket() -> AsyncIterator[str]:
    """An app on a Unix socket in a directory whose name has upper-case letters (httpx lower-cases hosts)."""
    with tempfile.TemporaryDirectory(prefix="Agent-") as directory:
        path = str(Path(directory) / "Agent.sock")
        app = Starlette(routes=[Route("/{rest:path}", _echo), WebSocketRoute("/ws/{rest:path}", _ws)])
        server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
            await asyncio.sleep(0.01)
        try:
            yield path
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)


def test_a_socket_address_round_trips_and_tcp_is_left_alone() -> None:
    path = "/tmp/Some Dir/ünï/agent.sock"
    url = unix_url(path)
    host = url.removeprefix("http+unix://")
    assert host.startswith("%2F") and "Some" not in host and " " not in host  # survives lower-casing
    assert socket_of(url) == path and socket_of(f"{url}/task?x=1") == path
    assert socket_of("http://127.0.0.1:8080") is None
    assert host_header("http://127.0.0.1:8080") == "127.0.0.1:8080" and host_header(url) == "localhost"
    with pytest.raises(ValueError):
        unix_url("relative.sock")


async def test_httpx_reaches_an_agent_on_a_socket(agent_socket: str) -> None:
    base = unix_url(agent_socket)
    async with httpx.AsyncClient(transport=AgentTransport(), timeout=10) as client:
        answer = (await client.get(f"{base}/status", params={"a": "1"})).json()
        assert answer == {"path": "/status", "query": "a=1", "host": "localhost"}
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{unix_url(agent_socket + '.missing')}/status")
    async with httpx.AsyncClient(timeout=10) as plain:  # a client that does not know: a loud failure
        with pytest.raises(httpx.UnsupportedProtocol):
            await plain.get(f"{base}/status")


async def test_aiohttp_and_websockets_reach_it(agent_socket: str) -> None:
    base = unix_url(agent_socket)
    async with aiohttp.ClientSession(connector=AgentConnector()) as session:
        async with session.get(
            URL(f"{base}/file/a%2Eb", encoded=True), headers={"Host": host_header(base)}
        ) as got:
            assert (await got.json())["path"] == "/file/a.b"
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(URL(f"{unix_url(agent_socket + '.missing')}/x", encoded=True))
    async with connect_websocket(base, "/ws/events?after_seq=3", proxy=None) as upstream:
        assert await upstream.recv() == "hello /ws/events?after_seq=3"
