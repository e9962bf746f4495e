"""A lean lane for ``run()``'s one request (``POST .../task?wait=true``) on plain http.

httpx (httpcore, anyio cancel scopes, h11) costs the client more CPU per short command than
the rest of its work together. This lane sends that one request over kept-alive connections
of its own: an asyncio ``Protocol`` (no streams, one loop wake-up per arrival), a request head
framed by hand from the ``httpx.AsyncClient``'s own headers, and httptools' C parser for the
answer. :class:`gateway.client._transport.Connection` uses it only for plain ``http://`` with
no custom transport, no proxy from the environment and no cookies in its jar; anything else
keeps the httpx path.

Contracts: a connection is reused only after its answer was read to its end with keep-alive;
one that the server closed (EOF or loss seen by the loop) is dropped before anything is sent on
it, and a request is never sent twice. An answer left early (closed, cancelled) aborts its
connection. Connect has the Connection's connect timeout; the answer no read timeout (a command
may be silent for long), like the httpx path. ``Accept-Encoding: identity``: the answer is a
live stream of records, never compressed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import httptools
import httpx

from gateway.client._answers import parse_json, split_lines
from gateway.client._exceptions import GatewayUnavailable
from sandbox_agent.contract import TASK_STREAM_MEDIA_TYPE

#: Body bytes buffered unread before the socket stops being read (a large output's back pressure).
_HIGH_WATER = 1 << 20

#: Headers that frame an answer's body (without either, the connection's close ends it).
_FRAMED = frozenset({b"content-length", b"transfer-encoding"})


class LaneBroken(Exception):
    """The connection failed or closed before the answer ended."""


class _Wire(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.dead = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.busy = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.done = False
        self.error: str | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.done:  # nothing was asked: the connection is not ours to reuse
            self._fail("the gateway sent bytes that answer nothing")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"a malformed answer ({exc})")

    def eof_received(self) -> bool:
        self._close_ends_body()
        self._fail("the gateway closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._close_ends_body()
        self._fail(f"the connection was lost ({exc})" if exc else "the gateway closed the connection")

    def _close_ends_body(self) -> None:
        """An answer with neither a length nor chunks (HTTP/1.0 style) ends when the connection
        closes (httptools has no end-of-input call for it)."""
        if self.busy and self.head_done and not self.done:
            self.done = not any(name.lower() in _FRAMED for name, _ in self.headers)

    # --- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        if not self._parser.should_keep_alive():
            self.dead = True
        self._wake()

    # --- the lane's side ----------------------------------------------------------------

    def _fail(self, why: str) -> None:
        if not self.dead:
            self.dead = True
            if self.transport is not None:
                self.transport.close()
        if self.busy and not self.done and self.error is None:
            self.error = why
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.busy = True
        self.transport.write(data)

    async def _arrival(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def head(self) -> None:
        """Until the answer's head has arrived; :class:`LaneBroken` if it cannot."""
        while not self.head_done:
            if self.error is not None:
                raise LaneBroken(self.error)
            await self._arrival()

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The answer's body as it arrives (de-chunked), to its end."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                self._chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield data
            elif self.done:
                return
            elif self.error is not None:
                raise LaneBroken(self.error)
            else:
                await self._arrival()

    def abort(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.abort()


class Lane:
    """Kept-alive connections to one ``host:port``, each carrying one request at a time."""

    def __init__(self, base_url: str, host: str, port: int, connect_timeout: float) -> None:
        """``base_url``: named in errors, as the httpx path names it."""
        self.base_url, self._host, self._port, self._connect_timeout = base_url, host, port, connect_timeout
        self._idle: list[_Wire] = []
        self._all: set[_Wire] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, request: bytes) -> _Wire:
        """A connection with ``request`` sent on it (a kept-alive one, or a new one)."""
        wire = await self._acquire()
        wire.send(request)
        return wire

    async def _acquire(self) -> _Wire:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that made them
            self._idle.clear()
            self._all.clear()
            self._loop = loop
        while self._idle:
            wire = self._idle.pop()
            if not wire.dead and wire.transport is not None and not wire.transport.is_closing():
                return wire
            self._all.discard(wire)
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, wire = await loop.create_connection(_Wire, self._host, self._port)
        except TimeoutError:
            raise GatewayUnavailable(
                f"the gateway at {self.base_url} did not answer in time (connect timed out)"
            ) from None
        except OSError as exc:
            raise GatewayUnavailable(f"cannot reach the gateway at {self.base_url}: {exc}") from None
        self._all.add(wire)
        return wire

    def release(self, wire: _Wire) -> None:
        """Take back a connection: kept for the next request if its answer was read to the end
        and both sides keep it alive, else closed."""
        if wire.done and not wire.dead and wire.error is None:
            wire.busy = False
            self._idle.append(wire)
        else:
            wire.abort()
            self._all.discard(wire)

    def close(self) -> None:
        for wire in self._all:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                wire.abort()
        self._idle.clear()
        self._all.clear()


def frame_request(method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A request head (HTTP/1.1) and its body, in one buffer."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class LaneAnswer:
    """An answer read from the lane, with what :class:`gateway.client._answers.Records` offers:
    a stream of JSON lines, or one JSON document. Close it when done (it gives its connection
    back, or aborts it when left unread)."""

    def __init__(self, lane: Lane, wire: _Wire, method: str, url: httpx.URL) -> None:
        self._lane, self._wire, self._method, self._url = lane, wire, method, url
        self._closed = False

    @property
    def status(self) -> int:
        return self._wire.status

    @property
    def streamed(self) -> bool:
        for name, value in self._wire.headers:
            if name.lower() == b"content-type":
                return value.split(b";", 1)[0].strip().decode("latin-1") == TASK_STREAM_MEDIA_TYPE
        return False

    async def head(self, cookies: httpx.Cookies) -> None:
        """Until the head has arrived; Set-Cookie goes to ``cookies`` (as httpx would)."""
        try:
            await self._wire.head()
        except LaneBroken as exc:
            where = self._lane.base_url
            raise GatewayUnavailable(f"lost the connection to the gateway at {where}: {exc}") from None
        if any(name.lower() == b"set-cookie" for name, _ in self._wire.headers):
            cookies.extract_cookies(self._response(b""))

    def _response(self, content: bytes) -> httpx.Response:
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._wire.headers]
        request = httpx.Request(self._method, self._url)  # only now: it costs a measurable share
        return httpx.Response(self.status, headers=headers, content=content, request=request)

    async def read(self) -> httpx.Response:
        """The whole answer as an ``httpx.Response`` (for errors and plain JSON answers)."""
        try:
            content = b"".join([chunk async for chunk in self._wire.body()])
        except LaneBroken as exc:
            raise GatewayUnavailable(f"the answer broke off: {exc}") from None
        finally:
            await self.aclose()
        return self._response(content)

    async def json(self) -> Any:
        return parse_json(await self.read())

    async def lines(self) -> AsyncGenerator[bytes, None]:
        """The non-empty lines of the answer, without their newline, as they arrive."""
        try:
            async for line in split_lines(self._wire.body()):
                yield line
        except LaneBroken as exc:
            raise GatewayUnavailable(f"the stream broke off: {exc}") from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._lane.release(self._wire)
