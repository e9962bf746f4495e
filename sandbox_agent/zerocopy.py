"""File bodies sent with ``sendfile``: from the page cache to the socket, never through Python.

A download read in chunks cost the agent about 1.3-1.6 s of CPU per GiB (measured with
``perf`` on a 1 GiB file: a worker-thread hop and a ``pread`` copy per 256 KiB chunk, the
interpreter's work per chunk, then the socket's copy), which made the agent the slowest
step of a download whether straight or through the gateway. ``os.sendfile`` hands the
file's pages to the socket: no copy in user space, one thread hop per socket-full.

:class:`FileSender` is what the agent's h11 protocol (:mod:`sandbox_agent.coalesce`) puts in
each HTTP request's ``scope["extensions"][SENDFILE]``. Contract of a call
``await sender(fd, offset, count)`` (returns the bytes sent):

- only between ``http.response.start`` (whose headers gave ``Content-Length``) and the last
  ``http.response.body`` (which then carries no bytes); h11 is told of the ``count`` bytes
  (its own sendfile support: a stand-in of that length, :class:`_Length`), so its framing
  checks hold, and a ``count`` past the declared length raises before anything is sent;
- what the protocol holds (the head) and what the transport buffers go first: bytes leave in
  the order they were written;
- the ``sendfile`` calls run in a worker thread (a file not in the page cache is read from
  disk there, never on the event loop), each until the socket is full; the wait for room is
  the event loop's, so a client that reads slowly holds no thread;
- fewer bytes than ``count`` (the file shrank, the client went away) close the connection:
  an answer shorter than its ``Content-Length`` must not leave the connection reusable;
- the socket is used through a duplicate descriptor of its own, closed only once no thread
  uses it: a connection closed meanwhile can never make its number name another file.
  Cancelled, it waits for the thread's round to end before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import h11

#: The key of the extension in ``scope["extensions"]``.
SENDFILE = "convoy.sendfile"
#: Most bytes one ``sendfile`` call is asked for (the kernel sends what the socket takes).
_MOST = 1 << 24


class _Length:
    """What h11 is given as a body piece of ``count`` bytes it never sees (``len`` only)."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


def _send_until_full(out_fd: int, in_fd: int, offset: int, count: int) -> tuple[int, bool]:
    """``sendfile`` from ``in_fd`` at ``offset`` until ``count`` bytes went, the socket is full
    or nothing more can go; ``(bytes sent, ended)``: ended, nothing more will (end of file,
    the connection broke)."""
    sent = 0
    while sent < count:
        try:
            sent_now = os.sendfile(out_fd, in_fd, offset + sent, min(count - sent, _MOST))
        except BlockingIOError:
            return sent, False
        except OSError:  # EPIPE, ECONNRESET, ...: the client is gone
            return sent, True
        if sent_now == 0:
            return sent, True  # the file is shorter than it was
        sent += sent_now
    return sent, False


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until ``fd`` can take bytes (or has failed: the next ``sendfile`` says which)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _whole(work: asyncio.Future[Any]) -> Any:
    """``work``'s result; cancelled meanwhile, waits for it to end first (it holds descriptors)."""
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait({work})
        raise


class FileSender:
    """The :data:`SENDFILE` extension of one connection (module docstring)."""

    def __init__(self, conn: h11.Connection, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._transport = transport  # a CoalescingTransport (flush) over the real one
        self._loop = loop

    async def __call__(self, fd: int, offset: int, count: int) -> int:
        if count <= 0:
            return 0
        pieces = self._conn.send_with_data_passthrough(h11.Data(data=_Length(count)))  # type: ignore[arg-type]
        if pieces is None or len(pieces) != 1 or not isinstance(pieces[0], _Length):
            self._transport.close()  # chunked framing: not for this extension (a caller's bug)
            raise RuntimeError("sendfile needs a Content-Length answer")
        socket = self._transport.get_extra_info("socket")
        if socket is None or self._transport.is_closing():
            return 0
        self._transport.flush()
        out_fd = os.dup(socket.fileno())
        try:
            sent = await self._send(out_fd, fd, offset, count)
        finally:
            os.close(out_fd)
        if sent < count:
            self._transport.close()
        return sent

    async def _send(self, out_fd: int, in_fd: int, offset: int, count: int) -> int:
        while self._transport.get_write_buffer_size() and not self._transport.is_closing():
            await _writable(self._loop, out_fd)  # the transport sends what it buffered first
            await asyncio.sleep(0)  # its own writer runs on the same readiness
        sent = 0
        while sent < count and not self._transport.is_closing():
            work = self._loop.run_in_executor(
                None, _send_until_full, out_fd, in_fd, offset + sent, count - sent
            )
            sent_now, ended = await _whole(work)
            sent += sent_now
            if ended:
                break
            if sent < count:
                await _writable(self._loop, out_fd)
        return sent
