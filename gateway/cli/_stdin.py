"""Local input for the commands that forward it: ``convoy shell`` and ``convoy exec -i``.

:func:`local_chunks` yields what arrives on a file descriptor as it arrives, ending with
``b""`` at EOF. A terminal or a pipe is watched by the event loop (``add_reader``); a
regular file (``< input.txt``), which the loop cannot watch, is read by a daemon thread,
so that a command whose remote side ends first never waits for local input to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator

#: Largest read from local input.
CHUNK = 64 * 1024


async def local_chunks(fd: int) -> AsyncGenerator[bytes, None]:
    """Chunks read from ``fd`` as they come; the last one is ``b""`` (EOF or a read error)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        queue.put_nowait(data)

    try:
        loop.add_reader(fd, readable)
        watched = True
    except (PermissionError, ValueError, OSError):  # a regular file: epoll will not watch it
        watched = False
        threading.Thread(target=_read_in_thread, args=(fd, loop, queue), daemon=True).start()
    try:
        while data := await queue.get():
            yield data
        yield b""
    finally:
        if watched:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)


def _read_in_thread(fd: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody wants it any more
            loop.call_soon_threadsafe(queue.put_nowait, data)
        if not data:
            return
