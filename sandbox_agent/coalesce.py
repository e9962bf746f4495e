"""The agent's HTTP protocol: uvicorn's h11 one, with the writes of one loop turn sent as one.

uvicorn's h11 protocol hands every piece of an answer to the socket at once: the
status line and headers, each body chunk, the end of a chunked body, each its own
``send`` and so its own packet on a ``TCP_NODELAY`` link. A streamed task
(``POST /task?wait=true``) answered 5-6 packets per command, each one waking the
gateway and then the client again. :class:`CoalescingH11Protocol` gives uvicorn a
transport that keeps what is written during one turn of the event loop and sends it
in one ``write`` at the end of that turn (``call_soon``), so a head and its first
line, or a last line and the end of the body, leave together.

Contract of :class:`CoalescingTransport`:
- Bytes reach the real transport in the order written, at the latest at the end of
  the loop turn they were written in (nothing waits for a timer or for more data);
  a write that brings the held bytes to :data:`HOLD_LIMIT` or more sends at once.
- ``close()`` sends what is held, then closes; ``abort()`` drops it. Anything written
  once the real transport is closing is dropped, as the real one would.
- Everything else (flow control, extra info, ``set_protocol`` for a WebSocket upgrade)
  is the real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from sandbox_agent.zerocopy import SENDFILE, FileSender

#: Bytes held before a write goes out without waiting for the end of the loop turn.
HOLD_LIMIT = 64 * 1024


class CoalescingTransport:
    """A transport's stand-in that sends one loop turn's writes in one (module docstring)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._held.append(bytes(data))
        self._held_bytes += len(data)
        if self._held_bytes >= HOLD_LIMIT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._end_of_turn)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is held now."""
        held, self._held, self._held_bytes = self._held, [], 0
        if not held or self._transport.is_closing():
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol writing through a :class:`CoalescingTransport`, offering each
    HTTP request the :data:`~sandbox_agent.zerocopy.SENDFILE` extension."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        coalescing = CoalescingTransport(transport, loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
        self._sender = FileSender(self.conn, coalescing, loop)

    def handle_events(self) -> None:
        super().handle_events()
        # A request's scope is made here and its application task only scheduled: the
        # extension is in the scope before the application first sees it.
        scope = self.scope if self.cycle is not None else None
        if scope is not None and scope.get("type") == "http":
            scope.setdefault("extensions", {})[SENDFILE] = self._sender  # type: ignore[assignment]
