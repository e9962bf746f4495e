"""The client's terminal object (connect at an offset, send, recv, resize, exit, delete) and
stdin writes, async and blocking, against a real gateway (memory runtime: real PTYs)."""

from __future__ import annotations

import asyncio

import pytest
from gw_helpers import Harness

from gateway.client import AsyncConvoyClient, AsyncTerminal, Conflict, ConvoyClient, NotFound, shell


async def read_until(terminal: AsyncTerminal, needle: bytes) -> bytes:
    data = b""
    async with asyncio.timeout(60):
        while needle not in data:
            chunk = await terminal.recv()
            assert chunk, f"ended before {needle!r}: {data!r}"
            data += chunk
    return data


async def test_terminal_resumes_at_its_offset_and_reports_the_exit(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        terminal = await convo.open_terminal(cols=90, rows=20, command=["/bin/sh"])
        async with await terminal.connect():
            await terminal.send("stty size\n")
            first = await read_until(terminal, b"20 90\r\n")
            await terminal.resize(120, 40)
            await terminal.send(b"stty size\n")
            first += await read_until(terminal, b"40 120\r\n")
        assert terminal.offset == len(first)
        await terminal.connect()  # resumes where the last connection stopped
        await terminal.send("echo next-$((2 + 3)); exit 4\n")
        rest = b""
        while chunk := await terminal.recv():
            rest += chunk
        assert b"next-5" in rest and terminal.exit_code == 4
        assert terminal.exit is not None and terminal.exit.size == len(first + rest) == terminal.offset
        again = await convo.terminal(terminal.id)
        whole = b""
        await again.connect(0)
        while chunk := await again.recv():
            whole += chunk
        assert whole == first + rest
        assert [t.id for t in [t async for t in convo.terminals()]] == [terminal.id]
        ended = await again.delete()
        assert ended.exit_code == 4
        with pytest.raises(NotFound):
            await convo.terminal(terminal.id)


async def test_write_stdin_and_its_refusals(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        run = await convo.start(shell("read a; echo got-$a; cat", stdin=True))
        assert (await run.write_stdin("one\n")).written == 4
        assert (await convo.write_stdin(run.id, b"two\n", eof=True)).closed
        result = await run.wait()
        assert result.stdout == "got-one\ntwo\n"
        with pytest.raises(Conflict):
            await run.write_stdin("late")
        plain = await convo.start_shell("true")
        await plain.wait()
        with pytest.raises(Conflict):
            await plain.write_stdin("x")


async def test_blocking_terminal(harness: Harness) -> None:
    async with harness.serve() as url:

        def scenario() -> tuple[bytes, int | None]:
            with ConvoyClient(url) as client, client.create() as convo:
                terminal = convo.open_terminal(command="echo blocking-$((1 + 1)); exit 2")
                data = b""
                with terminal.connect():
                    while chunk := terminal.recv():
                        data += chunk
                return data, terminal.exit_code

        data, code = await asyncio.to_thread(scenario)
    assert b"blocking-2" in data and code == 2
