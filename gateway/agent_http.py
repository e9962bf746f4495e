"""``AgentHttp``: a lean pooled HTTP/1.1 client for the proxy's bodiless requests to agents.

Most proxied requests are small and carry no body (``GET agent-info``, a file's
status, a task's state). Through aiohttp's client such a request cost the gateway
more CPU than everything else on its path (a request object, a response object, a
timer handle and a header multidict per request); this client writes the head as
one buffer and parses the answer with httptools (the C parser uvicorn uses), on
keep-alive connections pooled per agent.

Contracts:
- Bodiless requests of idempotent methods (:data:`LEAN_METHODS`), and small bodies the
  caller read whole and sends with the head (``retry=False``: never sent twice). For the
  former, a request on a reused connection that the agent closed while it lay idle, before
  one byte of an answer came, is sent once more on a new connection (what aiohttp
  does for these methods). ``HEAD`` is not among them (its answer's length header
  describes no body: the parser would wait for one). Informational answers
  (``100 Continue``) are skipped.
- The caller builds the head (:func:`request_head`); names and values come from an
  already parsed request (no CR or LF can be in them) and the gateway's own.
- ``connect_timeout`` bounds the connection; ``read_timeout`` bounds each wait for
  bytes (the head, then each piece of the body), as aiohttp's ``sock_read`` did;
  :meth:`Answer.no_read_timeout` lifts it. A timeout raises :class:`TimeoutError`;
  a refused connection or a broken or malformed answer an :class:`OSError`.
- The body is buffered up to :data:`_HIGH_WATER` bytes, then the socket stops being
  read until the consumer caught up: a large answer never sits in memory. Or the
  consumer reads the rest from the socket itself (:meth:`Answer.detach`).
- :meth:`Answer.close` gives the connection back to the pool when the answer was
  read to its end and the agent keeps the connection, and closes it otherwise.
  Idle connections are dropped after :data:`IDLE_SECONDS` (the agent's server closes
  its own after 5).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

from gateway.agent_transport import socket_of

LEAN_METHODS = frozenset({"GET", "DELETE"})
IDLE_SECONDS = 4.0
_HIGH_WATER = 256 * 1024


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request line and headers of a bodiless HTTP/1.1 request, as sent."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def raw_request_head(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """:func:`request_head` of headers already as bytes (a request's own: not decoded and encoded)."""
    lines = [
        f"{method} {target} HTTP/1.1".encode("latin-1"),
        *(name + b": " + value for name, value in headers),
    ]
    return b"\r\n".join([*lines, b"", b""])


class _Exchange(asyncio.Protocol):
    """One connection to an agent, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = False  # a byte of the answer came
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.error: OSError | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol and httptools callbacks --------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"malformed answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self._fail(ConnectionResetError("the agent closed the connection"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # informational (100 Continue): the answer follows
            self.headers = []
            return
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()  # read here: the parser resets at the end
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= _HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done:  # not the end of an informational answer
            self.complete = True
            self._wake()

    # --- the exchange ------------------------------------------------------------------

    def _fail(self, error: OSError) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def usable(self, now: float) -> bool:
        transport = self.transport
        return transport is not None and not transport.is_closing() and now - self.idle_since < IDLE_SECONDS

    def send(self, head: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(head)

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109 (a per-wait bound)
        """Until something new happened (head, body, end, error), at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # A bare timer, not asyncio.timeout(): this runs for every piece of every answer.
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        """The body buffered so far (reading resumes if it had stopped)."""
        body = b"".join(self.chunks)
        self.chunks, self.buffered = [], 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return body

    def keeps_alive(self) -> bool:
        return self.complete and self.error is None and self.keep_alive


class Answer:
    """An agent's answer: ``status`` and ``raw_headers`` at once, the body as it comes."""

    def __init__(self, exchange: _Exchange, pool: AgentHttp, key: str, read_timeout: float | None) -> None:
        self.status = exchange.status
        self.raw_headers = exchange.headers
        self._exchange = exchange
        self._pool = pool
        self._key = key
        self._timeout = read_timeout
        self._closed = False

    def no_read_timeout(self) -> None:
        self._timeout = None

    def at_eof(self) -> bool:
        exchange = self._exchange
        return exchange.complete and not exchange.chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in (at least one byte each)."""
        exchange = self._exchange
        while True:
            if exchange.chunks:
                yield exchange.take()
                continue
            if exchange.error is not None:
                raise exchange.error
            if exchange.complete:
                return
            await exchange.wait(self._timeout)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_any()])

    def detach(self) -> tuple[bytes, int]:
        """For a relay of the rest of the body straight from the connection (:mod:`gateway.splice`):
        stops reading it and returns the body already read and a duplicate of the connection's
        descriptor (the caller closes it). :meth:`close` then closes the connection."""
        exchange = self._exchange
        transport = exchange.transport
        if exchange.error is not None:
            raise exchange.error
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the agent closed the connection")
        if not exchange._paused:
            exchange._paused = True
            transport.pause_reading()
        body = b"".join(exchange.chunks)
        exchange.chunks, exchange.buffered = [], 0
        exchange.complete = False  # never back to the pool: its parser saw only part of the body
        return body, os.dup(transport.get_extra_info("socket").fileno())

    def close(self) -> None:
        """Back to the pool when read to its end (and kept alive by the agent), else closed."""
        if self._closed:
            return
        self._closed = True
        exchange = self._exchange
        if self.at_eof() and exchange.keeps_alive():
            self._pool.release(self._key, exchange)
        elif exchange.transport is not None:
            exchange.transport.close()


class AgentHttp:
    """Keep-alive connections per agent ``base_url`` (TCP or Unix socket, see
    :mod:`gateway.agent_transport`), for :func:`request_head` requests."""

    def __init__(self, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._idle: dict[str, list[_Exchange]] = {}

    async def request(
        self, base_url: str, head: bytes, read_timeout: float | None, retry: bool = True
    ) -> Answer:
        """Send ``head`` (with its body, if any) to the agent at ``base_url``; the answer once its
        head arrived. ``retry=False`` (a request that is not idempotent): never sent twice."""
        exchange = self._reused(base_url)
        if exchange is not None:
            try:
                return await self._exchange(exchange, base_url, head, read_timeout)
            except OSError:
                if exchange.received or not retry:
                    raise
                # Closed by the agent while idle, before it read the request: sent once more.
        exchange = await self._connect(base_url)
        return await self._exchange(exchange, base_url, head, read_timeout)

    async def _exchange(
        self,
        exchange: _Exchange,
        base_url: str,
        head: bytes,
        read_timeout: float | None,
    ) -> Answer:
        exchange.send(head)
        try:
            while not exchange.head_done:
                if exchange.error is not None:
                    raise exchange.error
                await exchange.wait(read_timeout)
        except BaseException:
            if exchange.transport is not None:
                exchange.transport.close()
            raise
        return Answer(exchange, self, base_url, read_timeout)

    def _reused(self, base_url: str) -> _Exchange | None:
        idle = self._idle.get(base_url)
        now = time.monotonic()
        while idle:
            exchange = idle.pop()
            if exchange.usable(now):
                return exchange
            if exchange.transport is not None:
                exchange.transport.close()
        self._idle.pop(base_url, None)  # nothing kept for an agent that is gone
        return None

    async def _connect(self, base_url: str) -> _Exchange:
        loop = asyncio.get_running_loop()
        path = socket_of(base_url)
        async with asyncio.timeout(self._connect_timeout):
            if path is not None:
                _, exchange = await loop.create_unix_connection(_Exchange, path)
            else:
                parts = urlsplit(base_url)
                host = unquote(parts.hostname or "")
                _, exchange = await loop.create_connection(_Exchange, host, parts.port or 80)
        return exchange

    def release(self, base_url: str, exchange: _Exchange) -> None:
        exchange.idle_since = time.monotonic()
        self._idle.setdefault(base_url, []).append(exchange)

    def close(self) -> None:
        """Closes every idle connection (answers still open close with their own)."""
        for idle in self._idle.values():
            for exchange in idle:
                if exchange.transport is not None:
                    exchange.transport.close()
        self._idle.clear()
