"""gateway.server_transport: an answer's head goes out with its body, in one write; nothing is
held past the loop's turn, reordered, or lost on close; a refused upload lingers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from gw_helpers import Serve, base_settings
from raw_http import RawHttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.server import uvicorn_options
from gateway.server_transport import ServerTransport


class FakeSocket:
    """What the socket's transport was asked to do."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))

    def write_eof(self) -> None:
        self.calls.append("eof")

    def close(self) -> None:
        self.closing = True
        self.calls.append("close")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_protocol(self) -> object:
        return None


class Protocol:
    body_unread = False
    lingering = False

    def linger(self) -> None:
        raise AssertionError("not lingering")


def _transport() -> tuple[ServerTransport, FakeSocket]:
    socket = FakeSocket()
    return ServerTransport(socket, Protocol(), asyncio.get_running_loop()), socket  # type: ignore[arg-type]


async def test_a_held_head_leaves_with_the_next_write() -> None:
    transport, socket = _transport()
    transport.write(b"unheld")
    transport.hold_next()
    transport.write(b"head;")
    assert socket.calls == [b"unheld"]
    transport.write(b"body")
    transport.write(b"more")
    assert socket.calls == [b"unheld", b"head;body", b"more"]
    await asyncio.sleep(0)
    assert socket.calls == [b"unheld", b"head;body", b"more"]  # nothing sent twice


async def test_a_held_head_leaves_on_the_next_turn_of_the_loop_at_the_latest() -> None:
    transport, socket = _transport()
    transport.hold_next()
    transport.write(b"head")
    await asyncio.sleep(0)
    assert socket.calls == [b"head"]
    transport.write(b"body")
    assert socket.calls == [b"head", b"body"]


async def test_closing_sends_what_is_held_first() -> None:
    for end in ("close", "write_eof"):
        transport, socket = _transport()
        transport.hold_next()
        transport.write(b"head")
        getattr(transport, end)()
        assert socket.calls == [b"head", "close" if end == "close" else "eof"]


async def test_answers_arrive_whole_and_in_order_on_one_connection(serve: Serve, tmp_path: Path) -> None:
    async def small(_: Request) -> Response:
        return PlainTextResponse("small")

    release = asyncio.Event()

    async def streamed(_: Request) -> Response:
        async def pieces() -> Any:
            await release.wait()  # set once the client has the head: it is not held for the body
            yield b"first "
            yield b"last"

        return StreamingResponse(pieces())

    app = Starlette(routes=[Route("/small", small), Route("/streamed", streamed)])
    options = uvicorn_options(base_settings(tmp_path))  # the gateway's own protocol
    async with serve(app, **options) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(3):
            assert (await client.get("/small")).text == "small"
        async with client.stream("GET", "/streamed") as answer:
            assert answer.status_code == 200
            release.set()
            assert b"".join([chunk async for chunk in answer.aiter_raw()]) == b"first last"
        assert (await client.get("/small")).text == "small"
        async with RawHttp.connect(url) as raw:  # pipelined: two answers, in order
            await raw.send(b"GET /small HTTP/1.1\r\nhost: x\r\n\r\nGET /streamed HTTP/1.1\r\nhost: x\r\n\r\n")
            first = await raw.response()
            assert first.status == 200 and first.body == b"small"
            second = await raw.reader.readuntil(b"\r\n0\r\n\r\n")  # chunked: up to its last chunk
            assert second.startswith(b"HTTP/1.1 200 OK\r\n") and second.endswith(
                b"first \r\n4\r\nlast\r\n0\r\n\r\n"
            )
