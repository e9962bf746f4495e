"""Helpers every test package uses: ``from tests.helpers import eventually, free_port, tar_of``
(pytest's ``pythonpath = ["."]`` makes ``tests`` importable)."""

from __future__ import annotations

import asyncio
import io
import socket
import tarfile
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Generous: a noisy 2-core machine is slow to start agents, containers and subprocesses.
TIMEOUT = 120.0


def free_port() -> int:
    """A loopback port nobody listens on just now (for a server to start, or to stay unreachable)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = TIMEOUT, what: str = "") -> T:
    """Await ``check()`` until it answers something truthy, and answer that; AssertionError
    (naming ``what`` and the last answer) once ``within`` seconds have passed. Polls often at
    first, then less (up to four times a second)."""
    deadline = time.monotonic() + within
    pause = 0.01
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {within:g}s: {what or check!r} (last: {result!r})")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


def tar_of(files: dict[str, str]) -> bytes:
    """An uncompressed tar archive of ``files`` (member name -> its text, UTF-8), e.g. a build context."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
