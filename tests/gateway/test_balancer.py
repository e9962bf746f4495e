"""The tiny TCP balancer (gateway.balancer): round robin over the gateways, a refusing one
skipped, bytes copied both ways unchanged (an HTTP exchange through it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.balancer import Address, Balancer
from tests.helpers import free_port


@contextlib.asynccontextmanager
async def named_server(name: bytes) -> AsyncIterator[Address]:
    """Answers each line it reads with ``name: line``, until the client closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(name + b": " + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield Address("127.0.0.1", server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def balanced(*backends: Address) -> AsyncIterator[Address]:
    balancer = Balancer(backends, down_for=30.0)
    server = await asyncio.start_server(balancer.serve_client, "127.0.0.1", 0)
    async with server:
        yield Address("127.0.0.1", server.sockets[0].getsockname()[1])


async def ask(front: Address, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(front.host, front.port)
    writer.write(line + b"\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return answer.strip()


async def test_round_robin_and_a_refusing_backend_is_skipped() -> None:
    async with named_server(b"a") as a, named_server(b"b") as b:
        dead = Address("127.0.0.1", free_port())
        async with balanced(a, dead, b) as front:
            answers = [await ask(front, f"hello {n}".encode()) for n in range(6)]
    assert {answer.split(b":")[0] for answer in answers} == {b"a", b"b"}
    assert answers[0] == b"a: hello 0", "bytes pass unchanged"
    assert sum(answer.startswith(b"a") for answer in answers) >= 2, "taken in turn"
    assert sum(answer.startswith(b"b") for answer in answers) >= 2, "the dead one's turns go on"


async def test_no_backend_answering_closes_the_client() -> None:
    async with balanced(Address("127.0.0.1", free_port())) as front:
        reader, writer = await asyncio.open_connection(front.host, front.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
