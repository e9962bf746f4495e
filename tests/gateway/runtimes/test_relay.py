"""The relay (images/sandbox/relay.py) as a real process on loopback: bytes intact both
ways, half-close passed on, errors and a missing target close the client, bounded
buffering for a reader that does not read, and a graceful SIGTERM. No Docker needed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port

RELAY = Path(__file__).resolve().parents[3] / "images" / "sandbox" / "relay.py"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def relay_to(target_port: int) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """The relay, run as the runtime runs it (``-I -S``), forwarding to ``target_port``."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", str(RELAY), str(port), "127.0.0.1", str(target_port)
    )
    try:
        for _ in range(500):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            assert process.returncode is None, "the relay exited"
            await asyncio.sleep(0.01)
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def target(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    await writer.drain()
    writer.close()


async def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` then EOF, while reading everything that comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sending = asyncio.create_task(send())
    received = await reader.read()
    await sending
    writer.close()
    return received


async def test_bytes_pass_both_ways_intact() -> None:
    payload = os.urandom(8 * 1024 * 1024)
    async with target(echo) as target_port, relay_to(target_port) as (_, port):
        assert await exchange(port, payload) == payload


async def test_many_connections_at_once() -> None:
    async with target(echo) as target_port, relay_to(target_port) as (_, port):
        payloads = [os.urandom(n * 1000) for n in range(1, 101)]
        assert await asyncio.gather(*(exchange(port, p) for p in payloads)) == payloads


async def test_a_half_close_is_passed_on_and_the_other_direction_goes_on() -> None:
    async def count_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = len(await reader.read())  # to the client's EOF
        writer.write(b"got %d" % size)
        await writer.drain()
        writer.close()

    async with target(count_then_answer) as target_port, relay_to(target_port) as (_, port):
        assert await exchange(port, b"x" * 300_000) == b"got 300000"


async def test_a_missing_target_closes_the_client_and_the_relay_goes_on() -> None:
    unused = free_port()
    async with relay_to(unused) as (process, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""
        writer.close()
        assert process.returncode is None


async def test_a_reset_upstream_closes_the_client() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # linger 0: an RST, not a FIN

    async with target(reset) as target_port, relay_to(target_port) as (process, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        assert process.returncode is None


async def test_a_reader_that_does_not_read_holds_its_writer_back() -> None:
    """The relay buffers at most a chunk per direction: 64 MiB cannot all leave the
    target while the client reads nothing; once it reads, every byte arrives."""
    total = 64 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    written = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):  # relay_to's probe connection goes away
            for _ in range(total // len(block)):
                writer.write(block)
                await writer.drain()
            written.set()
        writer.close()

    async with target(flood) as target_port, relay_to(target_port) as (_, port):
        # The client's stream stops reading from its socket past 128 KiB unread.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(written.wait(), 3)
        received, twice = 0, block * 2
        while data := await reader.read(len(block)):
            start = received % len(block)
            assert data == twice[start : start + len(data)]
            received += len(data)
        assert received == total and written.is_set()
        writer.close()


async def test_sigterm_ends_it_with_exit_code_0() -> None:
    async with target(echo) as target_port, relay_to(target_port) as (process, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # an open connection does not hold it
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        writer.close()
