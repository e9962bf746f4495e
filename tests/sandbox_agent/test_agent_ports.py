"""``/port/{port}/{path}``: the agent relays HTTP and WebSockets to a server on its loopback."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from agent_helpers import TOKEN, Served, ws_headers

from sandbox_agent.protocol import TOKEN_HEADER, WS_CLOSE_UNAUTHORIZED, WS_CLOSE_UPSTREAM_UNAVAILABLE
from tests.helpers import free_port
from tests.preview_app import PATTERN
from tests.preview_app import app as preview_app


@pytest.fixture
async def app_port(serve: Callable[..., Any]) -> AsyncIterator[int]:
    """The port of the preview test app, served on 127.0.0.1 (the agent's loopback)."""
    async with serve(preview_app) as url:
        yield int(url.rsplit(":", 1)[1])


async def test_a_request_reaches_the_server_without_the_token(agent: Served, app_port: int) -> None:
    response = await agent.client.get(
        f"/port/{app_port}/headers/a%20b/c", params={"x": "1"}, headers={"cookie": "app=1", "x-mine": "yes"}
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    headers = dict(seen["headers"])
    assert seen["path"] == "/headers/a b/c" and seen["query"] == "x=1"
    assert headers["host"] == f"127.0.0.1:{app_port}"
    assert headers["cookie"] == "app=1" and headers["x-mine"] == "yes"
    assert TOKEN_HEADER.lower() not in headers and TOKEN not in str(seen)


async def test_bodies_stream_both_ways(agent: Served, app_port: int) -> None:
    chunks = [PATTERN] * 8

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    posted = await agent.client.post(f"/port/{app_port}/count", content=body())
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert posted.json() == {"bytes": 8 * len(PATTERN), "sha256": digest}
    async with agent.client.stream("GET", f"/port/{app_port}/big", params={"mib": 16}) as streamed:
        assert streamed.status_code == 200
        assert "content-length" not in streamed.headers
        size = 0
        async for chunk in streamed.aiter_bytes():
            size += len(chunk)
    assert size == 16 * len(PATTERN)


async def test_nothing_listening_is_a_502_that_says_so(agent: Served) -> None:
    port = free_port()
    response = await agent.client.get(f"/port/{port}/")
    assert response.status_code == 502
    assert f"nothing listens on port {port}" in response.json()["detail"]


@pytest.mark.parametrize("port", ["0", "65536", "http"])
async def test_invalid_ports_are_422(agent: Served, port: str) -> None:
    assert (await agent.client.get(f"/port/{port}/")).status_code == 422


async def test_the_token_is_required(agent: Served, app_port: int) -> None:
    response = await agent.client.get(f"/port/{app_port}/", headers={TOKEN_HEADER: "wrong"})
    assert response.status_code == 401
    url = agent.url.replace("http", "ws", 1) + f"/port/{app_port}/ws"
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == WS_CLOSE_UNAUTHORIZED


async def test_a_websocket_is_relayed_with_its_subprotocol(agent: Served, app_port: int) -> None:
    url = agent.url.replace("http", "ws", 1) + f"/port/{app_port}/ws"
    async with websockets.connect(
        url, additional_headers=ws_headers(), subprotocols=[websockets.Subprotocol("echo.v1")]
    ) as ws:
        assert ws.subprotocol == "echo.v1"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01"


async def test_a_websocket_to_nothing_closes_with_4502(agent: Served) -> None:
    url = agent.url.replace("http", "ws", 1) + f"/port/{free_port()}/ws"
    async with websockets.connect(url, additional_headers=ws_headers()) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == WS_CLOSE_UPSTREAM_UNAVAILABLE
    assert "could not be opened" in (ws.close_reason or "")
