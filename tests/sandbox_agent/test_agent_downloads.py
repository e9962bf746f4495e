"""Downloads larger than one read: byte-exact whole and in ranges across chunks, and a client
that leaves mid-way leaves no file open; both under another ASGI server (chunks read one ahead
of the send) and under the agent's own protocol (``sendfile``: :mod:`sandbox_agent.zerocopy`),
whose connection serves the next request after a download as before."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_helpers import Served, served

from sandbox_agent.coalesce import CoalescingH11Protocol
from sandbox_agent.downloads import CHUNK
from sandbox_agent.settings import AgentSettings
from sandbox_agent.zerocopy import SENDFILE
from tests.helpers import eventually


def _open_files(path: str) -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd") if _target(fd) == path)


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture(params=["sendfile", "chunks"])
async def agent(request: pytest.FixtureRequest, serve: Any, settings: AgentSettings) -> AsyncIterator[Served]:
    options = {"http": CoalescingH11Protocol} if request.param == "sendfile" else {"http": "h11"}
    async with served(serve, settings, **options) as running:
        yield running


async def test_a_file_of_several_chunks_comes_whole_and_in_ranges(agent: Served) -> None:
    data = os.urandom(CHUNK * 3 + 12345)
    (agent.settings.workspace / "big.bin").write_bytes(data)
    whole = await agent.client.get("/file-content/big.bin")
    assert whole.status_code == 200 and whole.content == data
    start, end = CHUNK - 7, CHUNK * 2 + 9
    part = await agent.client.get("/file-content/big.bin", headers={"range": f"bytes={start}-{end}"})
    assert part.status_code == 206 and part.content == data[start : end + 1]
    assert (await agent.client.get("/agent-info")).status_code == 200  # the same connection, reused
    empty = agent.settings.workspace / "empty.bin"
    empty.touch()
    assert (await agent.client.get("/file-content/empty.bin")).content == b""


async def test_a_client_leaving_mid_download_leaves_no_file_open(agent: Served) -> None:
    target = agent.settings.workspace / "huge.bin"
    target.touch()
    os.truncate(target, CHUNK * 256)  # sparse: what is sent is not read from a disk
    real = str(target.resolve())
    async with agent.client.stream("GET", "/file-content/huge.bin") as answer:
        async for _ in answer.aiter_raw():
            break
        assert _open_files(real) == 1

    async def closed() -> bool:
        return _open_files(real) == 0

    await eventually(closed, what="the file closed")
    assert (await agent.client.get("/agent-info")).status_code == 200


# --- the extension itself ---------------------------------------------------------------


def _sending(path: Path, declared: int, count: int, sent: list[int | BaseException]) -> Any:
    """An ASGI app answering ``declared`` bytes of Content-Length, ``count`` of them by sendfile."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", str(declared).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        fd = os.open(path, os.O_RDONLY)
        try:
            sent.append(await scope["extensions"][SENDFILE](fd, 0, count))
        except Exception as error:
            sent.append(error)
            raise
        finally:
            os.close(fd)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_sendfile_sends_the_range_and_keeps_the_framing(serve: Any, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 3)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    sent: list[int | BaseException] = []
    async with (
        serve(_sending(path, len(data), len(data), sent), http=CoalescingH11Protocol) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for _ in range(2):  # twice on one connection: h11's state is right after the first
            answer = await client.get("/")
            assert answer.content == data
    assert sent == [len(data), len(data)]


async def test_a_file_shorter_than_said_closes_the_connection(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 1000)
    sent: list[int | BaseException] = []
    async with (
        serve(_sending(path, 5000, 5000, sent), http=CoalescingH11Protocol) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")
    assert sent == [1000]


async def test_more_than_the_declared_length_is_refused_before_sending(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"y" * 100)
    sent: list[int | BaseException] = []
    async with (
        serve(_sending(path, 10, 100, sent), http=CoalescingH11Protocol) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        with pytest.raises(httpx.HTTPError):
            await client.get("/")
        await asyncio.sleep(0)
    assert len(sent) == 1 and isinstance(sent[0], Exception)
