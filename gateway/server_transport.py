"""``ServerTransport``: a connection's transport as the gateway's HTTP protocol hands it to uvicorn.

Two things differ from the socket's own transport:

- Lingering: closing it while the request body is still arriving lingers
  instead (the protocol's ``linger()``), so a client refused mid-upload reads its
  answer instead of a connection reset.
- One write per small answer: uvicorn writes an answer's head and its body in
  two calls, so a small answer left in two segments, each a system call (and, on
  loopback, a wake-up of the reader). After :meth:`hold_next` (armed when a
  request's head is complete), the next write (the answer's head) is held and
  sent with the write after it (the body), in one call. It is never held longer
  than the current turn of the event loop: when nothing follows at once (a
  streamed answer whose first bytes come later), it is sent on the loop's next
  turn. Bytes always leave in the order written; closing (or ``write_eof``) sends
  what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class Lingering(Protocol):
    """What the transport needs of the protocol (:class:`gateway.server.GuardedHttpProtocol`)."""

    body_unread: bool
    lingering: bool

    def linger(self) -> None: ...


class ServerTransport:
    """See the module docstring."""

    def __init__(
        self, transport: asyncio.Transport, protocol: Lingering, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None
        # The hot paths, bound once: no delegation cost per write.
        self._write = transport.write
        self.write = self._write
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def hold_next(self) -> None:
        """Hold the next write until the one after it (or the loop's next turn)."""
        if self._held is None:
            self.write = self._hold

    def _hold(self, data: bytes | bytearray | memoryview) -> None:
        self._held = bytes(data)
        self.write = self._with_held
        self._flush = self._loop.call_soon(self.flush)

    def _with_held(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        self._release()
        self._write(held + data if held is not None else data)

    def _release(self) -> None:
        self._held = None
        self.write = self._write
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def flush(self) -> None:
        """Sends what is held, at once."""
        held = self._held
        self._release()
        if held is not None and not self._transport.is_closing():
            self._write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        protocol = self._protocol
        transport = self._transport
        current: object = transport.get_protocol()
        if (
            protocol.body_unread
            and not protocol.lingering
            and not transport.is_closing()
            and current is protocol
        ):
            protocol.linger()
        else:
            transport.close()
