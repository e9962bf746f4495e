"""``TaskStdin``: the open stdin of one task started with ``"stdin": true``.

Contract:
- Writes are applied in the order they are called (one at a time) and wait while
  the pipe is full (the process is not reading): backpressure, never unbounded
  memory. A write that comes before the process is started waits for it.
- ``eof`` closes the pipe after the write; every later write is refused
  (:class:`StdinClosed`, 409), as is one after the process closed its end or ended.
"""

from __future__ import annotations

import asyncio

from sandbox_agent.errors import Conflict


class StdinClosed(Conflict):
    """The task's stdin is closed: by an eof, by the process, or because it ended."""


class TaskStdin:
    def __init__(self, task_id: object) -> None:
        self.task_id = task_id
        self.closed = False
        self._writer: asyncio.StreamWriter | None = None
        self._started = asyncio.Event()
        self._lock = asyncio.Lock()

    def attach(self, writer: asyncio.StreamWriter) -> None:
        """The process runs: this is its stdin."""
        self._writer = writer
        self._started.set()

    def detach(self) -> None:
        """The process ended (or never started): nothing more can be written."""
        self.closed = True
        self._writer = None
        self._started.set()

    async def write(self, data: bytes, eof: bool = False) -> int:
        """Write ``data`` (then close the pipe if ``eof``); answers the bytes written."""
        async with self._lock:
            await self._started.wait()
            writer = self._writer
            if self.closed or writer is None:
                raise StdinClosed(f"the stdin of task {self.task_id} is closed")
            try:
                if data:
                    writer.write(data)
                    await writer.drain()
                if eof:
                    self.closed = True
                    writer.close()
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True
                raise StdinClosed(f"task {self.task_id} closed its stdin") from None
            return len(data)
