"""Zero-copy relay of an answer's body from an agent's socket to the client's, with ``splice``.

Streaming a large download through Python cost the gateway about 1.1 s of CPU per GiB
(measured with py-spy on a 1 GiB file: a ``read`` copy into the event loop's buffer, a
copy into a ``bytes``, a ``write`` copy into the client's socket, and the interpreter's
work per 256 KiB), which capped a download through the gateway at about half the agent's
own speed. ``os.splice`` moves the pages from one socket through a pipe to the other in
the kernel: nothing is copied in user space, one pair of system calls per pipe-full.

:class:`ClientSplice` is what the gateway's HTTP protocol (:mod:`gateway.server`) puts in
each request's ``scope["extensions"][SPLICE]``. Contract of ``await relay(fd, count,
stall_timeout)`` (returns the bytes relayed):

- only between ``http.response.start`` (whose headers gave ``Content-Length``) and the
  last ``http.response.body`` (which then carries no bytes, and says ``SPLICED`` bytes
  went: the traffic metrics count them); the server is told of the ``count`` bytes, so its
  framing checks hold; ``count`` past what the length leaves raises before anything goes;
- what the server buffered for the client (the head) goes first: bytes leave in order;
- ``fd`` is read from ``count`` bytes at most, never more: the caller's connection stays at
  the answer's end when all came;
- fewer bytes than ``count`` (the agent's answer ended early or broke, the client went away
  or read nothing for ``stall_timeout`` seconds) close the client's connection: an answer
  shorter than its ``Content-Length`` must not leave the connection reusable;
- every wait is the event loop's (non-blocking calls only: sockets and a pipe, no disk);
  cancelled, it returns nothing and leaves no reader, writer or descriptor behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable
from typing import Any

#: The key of the extension in ``scope["extensions"]``.
SPLICE = "convoy.splice"
#: The key of the last body message that tells how many bytes went by splice (for metrics).
SPLICED = "convoy.spliced"
#: The pipe's size asked for: pages moved per pair of calls (Linux's unprivileged maximum).
_PIPE_BYTES = 1 << 20
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, writing: bool) -> None:
    """Until ``fd`` can be read (or written), or has failed (the next call says which)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writing else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writing else loop.remove_reader)(fd)


async def pipe_relay(source: int, sink: int, count: int, stall_timeout: float) -> int:
    """Moves up to ``count`` bytes from socket ``source`` to socket ``sink`` (both
    non-blocking, neither used by a transport meanwhile); the bytes that reached ``sink``.
    Stops early at the source's end or failure, the sink's failure, or when ``sink`` takes
    nothing for ``stall_timeout`` seconds."""
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a smaller pipe only means more calls
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    sent = piped = 0
    try:
        while sent < count:
            if piped == 0:
                try:
                    moved = os.splice(source, write_end, count - sent, flags=_FLAGS)
                except BlockingIOError:
                    await _ready(loop, source, writing=False)
                    continue
                except OSError:
                    break  # the agent's connection broke
                if moved == 0:
                    break  # the agent closed before the answer's end
                piped = moved
            try:
                moved = os.splice(read_end, sink, piped, flags=_FLAGS)
            except BlockingIOError:
                try:
                    async with asyncio.timeout(stall_timeout):
                        await _ready(loop, sink, writing=True)
                except TimeoutError:
                    break  # the client reads nothing
                continue
            except OSError:
                break  # EPIPE, ECONNRESET: the client is gone
            piped -= moved
            sent += moved
    finally:
        os.close(read_end)
        os.close(write_end)
    return sent


def offer_splice(scope: Any, transport: Any, cycle: Any, flush: Callable[[], None] = lambda: None) -> None:
    """Offers :class:`ClientSplice` in ``scope`` (a request's, just parsed) when ``cycle`` is its
    request-response cycle (not an upgrade's) and the connection is not TLS (its socket carries
    records, not the answer's bytes). ``flush`` hands ``transport`` what the server holds back
    for it (:class:`gateway.server_transport.ServerTransport` holds an answer's head)."""
    if cycle is not None and cycle.scope is scope and transport.get_extra_info("ssl_object") is None:
        scope.setdefault("extensions", {})[SPLICE] = ClientSplice(transport, cycle, flush)


class ClientSplice:
    """The :data:`SPLICE` extension of one request (module docstring). ``transport`` is the
    client connection's real transport, ``cycle`` the server's request-response cycle
    (uvicorn's: its ``expected_content_length`` is told of the bytes relayed), ``flush`` what
    hands ``transport`` the bytes the server still holds (the head), before any is spliced."""

    def __init__(self, transport: Any, cycle: Any, flush: Callable[[], None] = lambda: None) -> None:
        self._transport = transport
        self._cycle = cycle
        self._flush = flush

    async def __call__(self, source: int, count: int, stall_timeout: float) -> int:
        cycle, transport = self._cycle, self._transport
        if cycle.chunked_encoding is not False or count > cycle.expected_content_length:
            raise RuntimeError("splice needs a Content-Length answer with room for the bytes")
        if count <= 0:
            return 0
        socket = transport.get_extra_info("socket")
        if socket is None or transport.is_closing():
            return 0
        self._flush()  # the head, if the server held it back to send with the body
        sink = os.dup(socket.fileno())  # ours: the transport may close its own meanwhile
        sent = 0
        try:
            loop = asyncio.get_running_loop()
            while transport.get_write_buffer_size() and not transport.is_closing():
                await _ready(loop, sink, writing=True)  # the transport sends what it buffered first
                await asyncio.sleep(0)  # its own writer runs on the same readiness
            if not transport.is_closing():
                sent = await pipe_relay(source, sink, count, stall_timeout)
        finally:
            os.close(sink)
            if sent < count:  # also when cancelled: part of the body may have gone
                transport.close()
        cycle.expected_content_length -= sent
        return sent
