"""Downloads larger than one read: byte-exact whole and in ranges across chunks (the next chunk
is read while one is sent), and a client that leaves mid-way leaves no file open."""

from __future__ import annotations

import os

from agent_helpers import Served

from sandbox_agent.downloads import CHUNK
from tests.helpers import eventually


def _open_files(path: str) -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd") if _target(fd) == path)


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


async def test_a_file_of_several_chunks_comes_whole_and_in_ranges(agent: Served) -> None:
    data = os.urandom(CHUNK * 3 + 12345)
    (agent.settings.workspace / "big.bin").write_bytes(data)
    whole = await agent.client.get("/file-content/big.bin")
    assert whole.status_code == 200 and whole.content == data
    start, end = CHUNK - 7, CHUNK * 2 + 9
    part = await agent.client.get("/file-content/big.bin", headers={"range": f"bytes={start}-{end}"})
    assert part.status_code == 206 and part.content == data[start : end + 1]


async def test_a_client_leaving_mid_download_leaves_no_file_open(agent: Served) -> None:
    target = agent.settings.workspace / "huge.bin"
    target.touch()
    os.truncate(target, CHUNK * 64)  # sparse: what is sent is not read from a disk
    real = str(target.resolve())
    async with agent.client.stream("GET", "/file-content/huge.bin") as answer:
        async for _ in answer.aiter_raw():
            break
        assert _open_files(real) == 1

    async def closed() -> bool:
        return _open_files(real) == 0

    await eventually(closed, what="the file closed")
