"""One running terminal: its PTY's master, its session, its output and its viewers.

Contract:
- Nothing blocks the event loop: the PTY's master is non-blocking and read from
  ``loop.add_reader``; writes to it wait for ``add_writer``; the output file is
  written in a worker thread (:class:`~sandbox_agent.spill.SpillFile`). While the
  file is not keeping up, reading pauses and the PTY fills instead of memory.
- Viewers (:meth:`RunningTerminal.next_chunk`) each read from their own offset: the
  bytes they get are exactly the terminal's output from there, with no gap and no
  duplicate, history and live alike.
- Input (:meth:`RunningTerminal.write`) waits while the PTY's input buffer is full;
  once the terminal has exited it takes nothing.
- :meth:`RunningTerminal.drain_and_close`, once the leader has exited, ends the rest
  of its session and reads what is left before closing the master.
Starting, supervising and forgetting terminals is :mod:`sandbox_agent.terminals`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from sandbox_agent.protocol import Terminal
from sandbox_agent.ptys import set_size
from sandbox_agent.sessions import Session
from sandbox_agent.spill import SpillFile

#: Largest read from a PTY master (the kernel hands out at most about 4 KiB per read) ...
READ_BYTES = 64 * 1024
#: ... and the most taken per wake-up, so that viewers get fewer, larger frames.
WAKE_BYTES = 256 * 1024


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RunningTerminal:
    """One PTY, its session, its output and its viewers' wake-up."""

    def __init__(self, info: Terminal, master: int, spill: SpillFile, grace: float) -> None:
        self.info = info
        self.master = master
        self.spill = spill
        self.grace = grace
        self.finished = asyncio.Event()  # EXITED, every output byte appended
        self._changed = asyncio.Event()
        self._eof = asyncio.Event()
        self._input = asyncio.Lock()
        self._master_open = True
        self._loop = asyncio.get_running_loop()
        self.session: Session | None = None
        self.supervisor: asyncio.Task[None] | None = None
        self._resumer: asyncio.Task[None] | None = None

    def describe(self) -> Terminal:
        return self.info.model_copy(update={"size": self.spill.size, "kept_from": self.spill.kept_from})

    # --- output -----------------------------------------------------------------

    def start_reading(self) -> None:
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        taken, ended = 0, False
        while taken < WAKE_BYTES:
            try:
                data = os.read(self.master, READ_BYTES)
            except BlockingIOError:
                break
            except OSError:  # EIO: every slave end is closed
                data = b""
            if not data:
                ended = True
                break
            self.spill.append(data)
            taken += len(data)
        if taken:
            self.notify()
        if ended:
            self._loop.remove_reader(self.master)
            self._eof.set()
            return
        if self.spill.backlogged:  # the file is not keeping up: let the PTY fill instead of memory
            self._loop.remove_reader(self.master)
            self._resumer = self._loop.create_task(self._resume_reading())

    async def _resume_reading(self) -> None:
        await self.spill.drained()
        if self._master_open and not self._eof.is_set():
            self.start_reading()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def next_chunk(self, offset: int, limit: int) -> tuple[bytes, int] | None:
        """The next bytes from ``offset`` on as ``(data, start)`` (``start > offset``: the
        bytes between were dropped), waiting for them; ``None`` once the terminal has
        exited and nothing is left to read."""
        while True:
            changed = self._changed
            finished = self.finished.is_set()
            data, start = await self.spill.read(offset, limit)
            if data:
                return data, start
            if finished:
                return None
            await changed.wait()

    # --- input ------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Type ``data`` into the terminal (waits while its input buffer is full); a
        terminal that has exited takes nothing."""
        async with self._input:
            view = memoryview(data)
            while view and self._master_open:
                try:
                    view = view[os.write(self.master, view) :]
                except BlockingIOError:
                    await self._writable()
                except OSError:
                    return

    async def _writable(self) -> None:
        ready = self._loop.create_future()
        self._loop.add_writer(self.master, _settle, ready)
        try:  # bounded, so that a master closed meanwhile is noticed
            await asyncio.wait({ready}, timeout=1.0)
        finally:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self.master)

    def resize(self, cols: int, rows: int) -> None:
        if self._master_open:
            set_size(self.master, cols, rows)
            self.info.cols, self.info.rows = cols, rows

    # --- the end ----------------------------------------------------------------

    async def drain_and_close(self) -> None:
        """After the leader exits: end the rest of its session, read what is left, close the master."""
        if self.session is not None:
            await self.session.hang_up()
            await self.session.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace + 1.0):
                await self._eof.wait()
        self._master_open = False
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.master)
        os.close(self.master)
