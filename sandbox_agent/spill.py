"""``SpillFile``: one terminal's output, addressed by absolute byte offset, bounded on disk.

Contract:
- Every byte the terminal produced has an offset: 0 for its first, :attr:`SpillFile.size`
  for the next one. :meth:`append` never blocks and never fails: the bytes are kept in
  memory (:attr:`pending`) until one background writer hands them to the file in a
  worker thread, so the event loop does no file I/O.
- Retention: at least the last ``keep_bytes`` bytes are kept, at most ``2 * keep_bytes``
  are on disk. Once the file holds twice the budget it is rewritten with its last
  ``keep_bytes`` bytes; :attr:`kept_from` (the oldest offset still readable) moves up.
- :meth:`read` answers the bytes from an offset on (at most ``limit``), or, for an
  offset older than :attr:`kept_from`, the bytes from :attr:`kept_from` and says so
  (the caller tells its viewer). It waits for nothing: at the end it answers ``b""``.
- A disk that cannot be written loses nothing: the bytes stay pending and the write is
  retried. The owner stops reading its source while :attr:`backlogged` (more than
  :data:`MAX_PENDING` pending) and waits for :meth:`drained`: a terminal whose output
  cannot be stored stalls its process (the PTY fills) rather than using unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from sandbox_agent.fdio import write_all

log = logging.getLogger(__name__)

#: Bytes held in memory before the owner must stop reading its source.
MAX_PENDING = 1024 * 1024
#: Seconds between attempts to write to a file that failed.
RETRY_SECONDS = 1.0


class SpillFile:
    @classmethod
    async def create(cls, path: Path, keep_bytes: int) -> SpillFile:
        """A new, empty file at ``path`` (opened in a worker thread)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        return cls(path, keep_bytes, await asyncio.to_thread(os.open, path, flags, 0o600))

    def __init__(self, path: Path, keep_bytes: int, fd: int) -> None:
        self.path = path
        self.keep_bytes = keep_bytes
        self.size = 0  # offset of the next byte
        self.kept_from = 0  # oldest offset still readable
        self._file_start = 0  # offset of the file's first byte
        self._flushed = 0  # offset up to which the file holds the bytes
        self.pending = bytearray()  # offsets [_flushed, size)
        self._lock = asyncio.Lock()  # file operations: write, compact, read, close
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._fd = fd
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=f"spill:{path.name}")
        self._closed = False

    def append(self, data: bytes) -> None:
        self.pending += data
        self.size += len(data)
        if self.backlogged:
            self._drained.clear()
        self._wake.set()

    @property
    def backlogged(self) -> bool:
        return len(self.pending) > MAX_PENDING

    async def drained(self) -> None:
        """Returns once no longer :attr:`backlogged`."""
        while self.backlogged:
            await self._drained.wait()

    async def read(self, offset: int, limit: int) -> tuple[bytes, int]:
        """``(data, start)``: up to ``limit`` bytes from ``start`` = ``max(offset, kept_from)``."""
        while True:
            start = max(offset, self.kept_from)
            if start >= self.size or self._closed:
                return b"", start
            if start >= self._flushed:  # still in memory: no file, no lock, no thread
                at = start - self._flushed
                return bytes(self.pending[at : at + limit]), start
            async with self._lock:
                # The file may have been written or compacted while this waited for the lock.
                start = max(offset, self.kept_from)
                if self._closed or start >= self._flushed:
                    continue
                count = min(limit, self._flushed - start)
                data = await asyncio.to_thread(os.pread, self._fd, count, start - self._file_start)
                return data, start

    async def close(self, remove: bool = False) -> None:
        """Write what is pending (best effort), stop the writer, close (and remove) the file."""
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        async with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    await self._flush()
                self._closed = True
                os.close(self._fd)
        if remove:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.path.unlink)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    await self._flush()
                    if self._flushed - self._file_start > 2 * self.keep_bytes:
                        await self._compact()
            except OSError as error:
                log.warning("terminal output file %s: %s", self.path, error.strerror or error)
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def _flush(self) -> None:
        data = bytes(self.pending)
        if not data:
            return
        await asyncio.to_thread(write_all_at, self._fd, data, self._flushed - self._file_start)
        del self.pending[: len(data)]  # append() only adds at the end: these are still first
        self._flushed += len(data)
        if not self.backlogged:
            self._drained.set()

    async def _compact(self) -> None:
        """Keep the last ``keep_bytes`` bytes of the file (rewritten in place, in a thread)."""
        new_start = self._flushed - self.keep_bytes
        await asyncio.to_thread(_keep_tail, self._fd, new_start - self._file_start, self.keep_bytes)
        self._file_start = new_start
        self.kept_from = max(self.kept_from, new_start)


def write_all_at(fd: int, data: bytes, position: int) -> None:
    os.lseek(fd, position, os.SEEK_SET)
    write_all(fd, data)


def _keep_tail(fd: int, start: int, count: int) -> None:
    """Move ``count`` bytes at ``start`` to the front of the file and cut the rest."""
    tail = os.pread(fd, count, start)
    os.lseek(fd, 0, os.SEEK_SET)
    write_all(fd, tail)
    os.ftruncate(fd, len(tail))
