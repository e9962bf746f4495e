"""The client's WebSocket (``Connection.connect_ws``) against a stub server on a real socket:
text and JSON both ways, async iteration that ends on any close with the code kept, and every
websockets error mapped to the client's own exceptions."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from fastapi import FastAPI, WebSocket

from gateway.client import (
    AsyncConvoyClient,
    Forbidden,
    GatewayUnavailable,
    UnexpectedResponse,
    WebSocketClosed,
)
from tests.helpers import free_port

Serve = Callable[..., AbstractAsyncContextManager[str]]


def stub() -> FastAPI:
    app = FastAPI()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.send_json(await websocket.receive_json())
        await websocket.send_text("not json {")
        await websocket.close(4321, "done here")

    @app.websocket("/three")
    async def three(websocket: WebSocket) -> None:
        await websocket.accept()
        for n in range(3):
            await websocket.send_text(f"frame {n}")
        await websocket.close(4008, "too slow")

    return app


async def test_text_and_json_both_ways_then_the_close_is_mapped(serve: Serve) -> None:
    async with serve(stub()) as url, AsyncConvoyClient(url) as client:
        ws = await client._conn.connect_ws("/echo")
        await ws.send_text("hello")
        assert await ws.recv() == "hello"
        await ws.send_json({"type": "Note", "n": [1, 2]})
        assert await ws.recv_json() == {"type": "Note", "n": [1, 2]}
        with pytest.raises(UnexpectedResponse, match="not JSON"):
            await ws.recv_json()
        with pytest.raises(WebSocketClosed) as closed:
            await ws.recv()
        assert (closed.value.code, closed.value.reason) == (4321, "done here")
        assert (ws.close_code, ws.close_reason) == (4321, "done here")
        with pytest.raises(WebSocketClosed):
            await ws.send_text("anyone?")
        await ws.close()
        await ws.close()  # closing twice is fine


async def test_iteration_ends_on_any_close_and_keeps_the_code(serve: Serve) -> None:
    async with serve(stub()) as url, AsyncConvoyClient(url) as client:
        async with await client._conn.connect_ws("/three") as ws:
            frames = [frame async for frame in ws]
        assert frames == ["frame 0", "frame 1", "frame 2"]
        assert (ws.close_code, ws.close_reason) == (4008, "too slow")


async def test_a_refused_handshake_is_mapped_by_its_status(serve: Serve) -> None:
    async with serve(stub()) as url, AsyncConvoyClient(url) as client:
        with pytest.raises(Forbidden):  # starlette refuses an unknown WebSocket route with 403
            await client._conn.connect_ws("/nowhere")


async def test_nobody_listening_is_gateway_unavailable() -> None:
    async with AsyncConvoyClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(GatewayUnavailable, match="cannot open a WebSocket"):
            await client._conn.connect_ws("/echo")
