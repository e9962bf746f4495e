"""An append-only JSON-lines file written in batches.

Contract:
- :meth:`Journal.append` never blocks: it assigns the line its byte offset and
  queues it; one background writer hands everything queued since its last
  write (and in the loop turn after it was woken) to the file in a single
  ``write`` (in a worker thread). So a burst of
  appends costs one system call, not one per line, and the file is never
  fsynced per line (it is at :meth:`close`).
- A line is ``b"<json>\\n"``; readers must not read a byte at or past
  :attr:`Journal.flushed` from the file - the owner keeps unflushed lines in
  memory.
- A crash can leave at most a torn last line. :meth:`load` hands every complete
  line to the caller in order and truncates the file at the first torn or
  rejected line, so the next writer appends to a clean file.
- A failed write (disk full, I/O error) never leaves a torn line behind: the
  file is cut back to :attr:`Journal.flushed`, the batch stays queued and is
  retried every :attr:`Journal.retry_seconds`. Until a retry succeeds,
  :meth:`Journal.append` refuses new lines with :class:`JournalUnwritable`, so
  what was accepted keeps its offsets and reaches the file in order once space
  is back. Only when the cut itself fails does the journal stop for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sandbox_agent.fdio import write_all

log = logging.getLogger(__name__)

_READ_BLOCK = 1024 * 1024


class JournalUnwritable(RuntimeError):
    """The journal's file cannot be written just now (``error`` says why); nothing was queued."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"journal {path} cannot be written: {error.strerror or error}")
        self.error = error


class _Torn(Exception):
    """A failed write whose partial bytes could not be cut off again."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class Journal:
    #: Seconds between attempts to write a batch that failed.
    retry_seconds = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._end = 0  # offset after the last appended (maybe unflushed) line
        self.flushed = 0  # offset after the last line written to the file
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._drained: list[asyncio.Future[None]] = []
        self._failed: OSError | None = None

    # --- start-up -------------------------------------------------------------

    def load(self, accept: Callable[[int, bytes], bool]) -> int:
        """Feed each complete line (offset, bytes without newline) to ``accept``.

        Stops at the first line that is torn (no newline) or that ``accept``
        rejects, truncates the file there and returns the number of accepted
        lines. Blocking: run it in a thread.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        good = 0
        count = 0
        with open(self.path, "a+b") as file:
            file.seek(0)
            carry = b""
            offset = 0
            stop = False
            while not stop:
                block = file.read(_READ_BLOCK)
                if not block:
                    break
                data = carry + block
                start = 0
                while True:
                    end = data.find(b"\n", start)
                    if end < 0:
                        break
                    line = data[start:end]
                    if not accept(offset, line):
                        log.warning("journal %s: rejected line at offset %d; truncating", self.path, offset)
                        stop = True
                        break
                    offset += end + 1 - start
                    good = offset
                    count += 1
                    start = end + 1
                carry = data[start:]
            size = file.seek(0, os.SEEK_END)
            if size != good:
                log.warning("journal %s: dropping %d torn byte(s) at the end", self.path, size - good)
                file.truncate(good)
        self._end = self.flushed = good
        return count

    def start(self) -> None:
        """Open for appending and start the background writer (on the running loop)."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._writer = asyncio.create_task(self._write_loop(), name=f"journal:{self.path.name}")

    # --- appending ------------------------------------------------------------

    @property
    def end(self) -> int:
        return self._end

    def check_writable(self) -> None:
        """Raise :class:`JournalUnwritable` while appends are refused."""
        if self._failed is not None:
            raise JournalUnwritable(self.path, self._failed)

    def append(self, line: bytes) -> int:
        """Queue ``line`` (without its newline); returns its offset in the file.

        Raises :class:`JournalUnwritable` while the file cannot be written.
        """
        self.check_writable()
        offset = self._end
        self._pending.append(line)
        self._pending.append(b"\n")
        self._end += len(line) + 1
        self._wake.set()
        return offset

    async def flush(self) -> None:
        """Return once everything appended so far is in the file, or a write failed."""
        if self.flushed == self._end or self._writer is None or self._writer.done():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained.append(waiter)
        self._wake.set()
        await waiter

    async def _write_loop(self) -> None:
        assert self._fd is not None
        fd = self._fd
        while True:
            if self._failed is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.retry_seconds)
            # One more loop turn before writing: what the same burst appends on the next turn
            # (a task's PENDING then RUNNING records) goes in the same write and worker thread.
            await asyncio.sleep(0)
            self._wake.clear()
            if self._pending:
                batch, self._pending = b"".join(self._pending), []
                try:
                    await asyncio.to_thread(_append_or_undo, fd, batch, self.flushed)
                except _Torn as torn:
                    log.error("journal %s: write failed and cannot be undone: %s", self.path, torn.error)
                    self._failed = torn.error
                    self._release_waiters()
                    return
                except OSError as error:  # disk full, I/O error: keep serving, retry later
                    if self._failed is None:
                        log.error("journal %s: write failed, retrying: %s", self.path, error)
                    self._failed = error
                    self._pending.insert(0, batch)  # lines appended meanwhile follow it
                    self._release_waiters()
                    continue
                self.flushed += len(batch)
                if self._failed is not None:
                    log.warning("journal %s: writing again", self.path)
                    self._failed = None
            if not self._pending:
                self._release_waiters()

    def _release_waiters(self) -> None:
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        """Write what is queued, fsync, stop the writer, close the file."""
        if self._writer is not None and not self._writer.done():
            await self.flush()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await asyncio.to_thread(_sync_and_close, fd)

    # --- reading --------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the file. Blocking; flushed bytes only."""
        with open(self.path, "rb") as file:
            return os.pread(file.fileno(), length, offset)


def _append_or_undo(fd: int, data: bytes, size: int) -> None:
    """Append ``data`` to a file of ``size`` bytes; on failure cut it back to ``size``, then raise."""
    try:
        write_all(fd, data)
    except OSError as error:
        try:
            os.ftruncate(fd, size)
        except OSError:
            raise _Torn(error) from error
        raise


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as error:  # disk full at write-back: what was written stays; nothing to do
        log.error("journal: fsync failed: %s", error)
    finally:
        os.close(fd)
