"""An append-only JSON-lines file written in batches.

Contract:
- :meth:`Journal.append` never blocks: it assigns the line its byte offset and
  queues it; two loop turns later everything queued meanwhile goes to the
  file in a single ``write`` (the writer is a chain of loop callbacks, not a
  task: no wake-up of its own per batch). So a burst of appends costs one system call, not one per line, and
  the file is never fsynced per line (it is at :meth:`close`). A batch of at
  most :data:`INLINE_WRITE_BYTES` is written on the event loop: an append to a
  file is a copy into the page cache (nothing to wait for), and a worker
  thread's round trip (its wake-up, the GIL handed back and forth, the loop's
  wake-up) cost several times the write on every task. A larger batch (a burst
  of output) is written in a worker thread, where copying it cannot hold the
  loop up.
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
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sandbox_agent.fdio import write_all

log = logging.getLogger(__name__)

_READ_BLOCK = 1024 * 1024
#: Batches up to this size are written on the event loop, larger ones in a worker thread.
INLINE_WRITE_BYTES = 64 * 1024


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
        self._loop: asyncio.AbstractEventLoop | None = None
        # The writer is a chain of loop callbacks, not a task: a write is due (a callback, a
        # retry timer or a worker thread's write is pending) exactly while ``_due`` is true.
        self._due = False
        self._retry: asyncio.TimerHandle | None = None
        self._in_thread: asyncio.Future[None] | None = None
        self._stopped = False  # closed, or a torn write that could not be undone
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
        """Open for appending; from now on queued lines are written (on the running loop)."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._loop = asyncio.get_running_loop()
        if self._pending:
            self._schedule()

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
        if not self._due and self._loop is not None:
            self._schedule()
        return offset

    async def flush(self) -> None:
        """Return once everything appended so far is in the file, or a write failed."""
        if self.flushed == self._end or self._stopped or self._loop is None:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drained.append(waiter)
        if self._retry is not None:  # a failed batch waits for its retry: try it now
            self._retry.cancel()
            self._retry = None
            self._loop.call_soon(self._write)
        await waiter

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = True
        # One more loop turn before writing: what the same burst appends on the next turn
        # (a task's PENDING then RUNNING records) goes in the same write.
        self._loop.call_soon(self._loop.call_soon, self._write)

    def _write(self) -> None:
        """Write everything queued: here when it is small, else in a worker thread."""
        self._retry = None
        if self._stopped or self._fd is None:
            self._due = False
            return
        if not self._pending:
            self._due = False
            self._release_waiters()
            return
        batch, self._pending = b"".join(self._pending), []
        if len(batch) > INLINE_WRITE_BYTES:
            writing = asyncio.ensure_future(asyncio.to_thread(_append_or_undo, self._fd, batch, self.flushed))
            writing.add_done_callback(lambda done: self._written(batch, _failure(done)))
            self._in_thread = writing
            return
        try:
            _append_or_undo(self._fd, batch, self.flushed)
        except OSError as error:  # _Torn too
            self._written(batch, error)
            return
        self._written(batch, None)

    def _written(self, batch: bytes, error: BaseException | None) -> None:
        """After the write of ``batch``: account for it, or keep it for a retry."""
        self._in_thread = None
        assert self._loop is not None
        if isinstance(error, _Torn) or (error is not None and not isinstance(error, OSError)):
            log.error("journal %s: write failed and cannot be undone: %s", self.path, error)
            self._failed = error.error if isinstance(error, _Torn) else OSError(errno.EIO, str(error))
            self._stopped = True
            self._due = False
            self._release_waiters()
            return
        if error is not None:  # disk full, I/O error: keep serving, retry later
            if self._failed is None:
                log.error("journal %s: write failed, retrying: %s", self.path, error)
            self._failed = error
            self._pending.insert(0, batch)  # lines appended meanwhile follow it
            self._release_waiters()
            self._retry = self._loop.call_later(self.retry_seconds, self._write)
            return
        self.flushed += len(batch)
        if self._failed is not None:
            log.warning("journal %s: writing again", self.path)
            self._failed = None
        if self._pending:  # appended while the thread wrote
            self._loop.call_soon(self._write)
            return
        self._due = False
        self._release_waiters()

    def _release_waiters(self) -> None:
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        """Write what is queued, fsync, stop writing, close the file."""
        if not self._stopped:
            await self.flush()
            self._stopped = True
            if self._retry is not None:
                self._retry.cancel()
            if self._in_thread is not None:
                await asyncio.wait({self._in_thread})
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


def _failure(done: asyncio.Future[None]) -> BaseException | None:
    """What a worker thread's write raised (a cancelled write: the loop is going away)."""
    if done.cancelled():
        return asyncio.CancelledError()
    return done.exception()


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as error:  # disk full at write-back: what was written stays; nothing to do
        log.error("journal: fsync failed: %s", error)
    finally:
        os.close(fd)
