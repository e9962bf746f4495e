"""The lean agent client (gateway.agent_http) against real servers on loopback: a
Starlette app under uvicorn for answers, a raw asyncio server for broken ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gw_helpers import Serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.agent_http import AgentHttp, request_head
from gateway.agent_transport import unix_url
from tests.conftest import run_uvicorn

BIG = 8 * 1024 * 1024


def _app(peers: set[tuple[str, int] | str]) -> Starlette:
    async def small(request: Request) -> Response:
        client = request.scope.get("client")
        peers.add(tuple(client) if client else "unix")
        return PlainTextResponse(request.headers.get("x-echo", "none"))

    async def big(_: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(BIG // 65536):
                yield b"y" * 65536

        return StreamingResponse(chunks())

    return Starlette(routes=[Route("/small", small), Route("/big", big)])


def _head(path: str, *extra: tuple[str, str]) -> bytes:
    return request_head("GET", path, [("Host", "agent"), *extra])


async def test_small_answers_reuse_one_connection(serve: Serve) -> None:
    peers: set[tuple[str, int] | str] = set()
    client = AgentHttp(connect_timeout=5)
    async with serve(_app(peers)) as url:
        for value in ("a", "b", "c"):
            answer = await client.request(url, _head("/small", ("X-Echo", value)), 5)
            assert answer.status == 200
            assert (b"content-length", b"1") in [(n.lower(), v) for n, v in answer.raw_headers]
            assert await answer.read() == value.encode()
            answer.close()
    client.close()
    assert len(peers) == 1  # one client port: the connection was kept


async def test_a_large_answer_streams_in_pieces(serve: Serve) -> None:
    client = AgentHttp(connect_timeout=5)
    async with serve(_app(set())) as url:
        answer = await client.request(url, _head("/big"), 5)
        sizes = [len(chunk) async for chunk in answer.iter_any()]
        answer.close()
        assert sum(sizes) == BIG and len(sizes) > 1 and max(sizes) <= 2 * 1024 * 1024
        again = await client.request(url, _head("/small"), 5)  # the connection is whole again
        assert await again.read() == b"none"
        again.close()
    client.close()


async def test_agents_on_a_unix_socket(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "agent.sock")
    client = AgentHttp(connect_timeout=5)
    async with run_uvicorn(_app(set()), uds=socket_path):
        answer = await client.request(unix_url(socket_path), _head("/small", ("X-Echo", "u")), 5)
        assert answer.status == 200 and await answer.read() == b"u"
        answer.close()
    client.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _raw_server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_a_connection_closed_while_idle_is_replaced() -> None:
    connections = 0

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_OK)
        await writer.drain()
        writer.close()  # after one answer, without saying so (no Connection: close)

    client = AgentHttp(connect_timeout=5)
    async with _raw_server(once_then_close) as url:
        for _ in range(3):
            answer = await client.request(url, _head("/x"), 5)
            assert await answer.read() == b"ok"
            answer.close()
            await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
    client.close()
    assert connections == 3


async def test_an_informational_answer_is_skipped() -> None:
    async def continue_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + _OK)
        await writer.drain()

    client = AgentHttp(connect_timeout=5)
    async with _raw_server(continue_first) as url:
        answer = await client.request(url, _head("/x", ("Expect", "100-continue")), 5)
        assert answer.status == 200 and await answer.read() == b"ok"
        answer.close()
    client.close()


@pytest.mark.parametrize(
    "reply",
    [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
    ids=["malformed", "broken-off"],
)
async def test_broken_answers_are_os_errors(reply: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    client = AgentHttp(connect_timeout=5)
    async with _raw_server(broken) as url:
        with pytest.raises(OSError):
            answer = await client.request(url, _head("/x"), 5)
            try:
                await answer.read()
            finally:
                answer.close()
    client.close()


async def test_silence_is_a_timeout_and_refusal_an_os_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    client = AgentHttp(connect_timeout=5)
    async with _raw_server(silent) as url:
        with pytest.raises(TimeoutError):
            await client.request(url, _head("/x"), 0.2)
    with pytest.raises(OSError):
        await client.request("http://127.0.0.1:9", _head("/x"), 1)  # nothing listens (discard port)
    client.close()
