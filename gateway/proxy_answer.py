"""What the proxy reads an agent's answer through, and how it streams one to the client.

- :class:`AiohttpAnswer` gives an aiohttp answer the surface of the lean client's
  (:class:`gateway.agent_http.Answer`): ``status``, ``raw_headers``, ``read``,
  ``iter_any``, ``at_eof``, ``close`` (back to the pool when read to its end, else
  closed) and ``no_read_timeout``; :data:`UpstreamAnswer` is either.
- :class:`UpstreamResponse` streams one to the client (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

import aiohttp
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.agent_http import Answer
from gateway.client_gone import CLIENT_GONE, ClientGone
from gateway.splice import SPLICE, SPLICED, ClientSplice
from sandbox_agent.race import race

log = logging.getLogger("convoy.gateway")

#: An answer that broke off (the connection dropped, a malformed body, no byte for too long).
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
#: Bodies of at least this many bytes are relayed with ``splice`` when they can be (see above).
SPLICE_FROM = 1 << 20


class AiohttpAnswer:
    """An aiohttp answer as the proxy reads it (the surface of :class:`gateway.agent_http.Answer`)."""

    def __init__(self, upstream: aiohttp.ClientResponse) -> None:
        self.status = upstream.status
        self.raw_headers = upstream.raw_headers
        self._upstream = upstream

    def at_eof(self) -> bool:
        return self._upstream.content.at_eof()

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._upstream.content.iter_any()

    async def read(self) -> bytes:
        return await self._upstream.read()

    def close(self) -> None:
        """Give the connection back to the pool when the answer was read to its end, else close
        it (an answer left half-read cannot carry another request)."""
        if self._upstream.content.at_eof():
            self._upstream.release()
        else:
            self._upstream.close()

    def no_read_timeout(self) -> None:
        """Lift the read timeout of this answer's body (the connection's next request sets its own)."""
        connection = self._upstream.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is not None:
            protocol.read_timeout = None
            protocol.start_timeout()  # drops the wait already scheduled


UpstreamAnswer = Answer | AiohttpAnswer


class UpstreamResponse(Response):
    """Streams an open upstream response to the client and always closes it,
    also when the client goes away (watched for concurrently: a server that does
    not raise on a write to a gone client must not keep us reading upstream), and
    when one write waits ``stall_timeout`` seconds or more for a client that does
    not read (the answer is then cut short, like an upstream that broke off). A
    watchdog checks a time stamp: a timeout around every write would cost more
    than the write itself.

    On the gateway's own server (:data:`gateway.client_gone.CLIENT_GONE` offered) an answer of
    the lean client streams in the request's task, the watchdog a timer (:meth:`_watched`);
    elsewhere (aiohttp's answers, other servers) the stream, a watch of ``receive`` and the
    watchdog race in three tasks."""

    def __init__(
        self,
        upstream: UpstreamAnswer,
        headers: list[tuple[bytes, bytes]],
        activity: AbstractContextManager[None],
        stall_timeout: float,
    ) -> None:
        self.status_code = upstream.status
        self.raw_headers = headers
        self.background = None
        self._upstream = upstream
        self._activity = activity
        self._stall_timeout = stall_timeout
        self._writing_since: float | None = None  # loop time the pending write began

    async def _stream(self, scope: Scope, send: Send) -> None:
        clock = asyncio.get_running_loop().time
        self._writing_since = clock()
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._writing_since = None
        length = self._spliceable(scope)
        if length is not None:
            await self._splice(scope["extensions"][SPLICE], send, length)
            return
        try:
            upstream = self._upstream
            async for chunk in upstream.iter_any():
                # A chunk that came with the answer's end goes out with it (one write, and the
                # client knows at once that the connection is free for its next request).
                last = upstream.at_eof()
                self._writing_since = clock()
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                self._writing_since = None
                if last:
                    return
        except UPSTREAM_ERRORS as error:
            log.info("upstream broke off mid-answer: %r", error)
            return  # the server ends the connection: the client sees an incomplete answer
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _spliceable(self, scope: Scope) -> int | None:
        """The body's length when it is relayed with ``splice`` (:mod:`gateway.splice`): a GET's
        answer of a known length, large enough, from the lean client, with a server offering it."""
        upstream = self._upstream
        if (
            scope["method"] != "GET"
            or not isinstance(upstream, Answer)
            or SPLICE not in scope.get("extensions", {})
            or any(n.lower() == b"transfer-encoding" for n, _ in upstream.raw_headers)
        ):
            return None
        size = next((v for n, v in self.raw_headers if n == b"content-length"), b"")
        return int(size) if size.isdigit() and int(size) >= SPLICE_FROM else None

    async def _splice(self, relay: ClientSplice, send: Send, length: int) -> None:
        """The body of ``length`` bytes: what the lean client read already, then the rest straight
        from the agent's socket to the client's. An answer cut short leaves the client's
        connection closed (the relay closes it), as when a copied stream breaks off."""
        assert isinstance(self._upstream, Answer)
        try:
            body, source = self._upstream.detach()
        except OSError as error:
            log.info("upstream broke off mid-answer: %r", error)
            return
        try:
            if body:
                self._writing_since = asyncio.get_running_loop().time()
                await send({"type": "http.response.body", "body": body[:length], "more_body": True})
                self._writing_since = None
            rest = max(length - len(body), 0)
            sent = await relay(source, rest, self._stall_timeout)
        finally:
            os.close(source)
        if sent < rest:
            log.info("the spliced answer broke off after %d of %d bytes", length - rest + sent, length)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False, SPLICED: sent})

    async def _stalled(self) -> None:
        """Returns once a write has waited ``stall_timeout`` (noticed within twice that)."""
        clock = asyncio.get_running_loop().time
        while True:
            since, now = self._writing_since, clock()
            if since is not None and now - since >= self._stall_timeout:
                log.info("the client read nothing for %gs: answer cut short", now - since)
                return
            await asyncio.sleep(self._stall_timeout if since is None else since + self._stall_timeout - now)

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = scope.get("extensions", {}).get(CLIENT_GONE)
        with self._activity:
            try:
                if isinstance(gone, ClientGone) and isinstance(self._upstream, Answer):
                    streamed = await self._watched(scope, send, gone)
                else:
                    streamed, _, _ = await race(
                        self._stream(scope, send), self._disconnected(receive), self._stalled()
                    )
            finally:
                self._upstream.close()
        if isinstance(streamed, Exception) and not isinstance(streamed, OSError):
            log.warning("streaming an answer failed: %r", streamed)

    async def _watched(self, scope: Scope, send: Send, gone: ClientGone) -> BaseException | None:
        """:meth:`_stream` in this task, ended as :func:`race` would end it (cancelled where it
        waits) when the server tells of the client's going (``gone``) or a write stalls (a
        timer checks the time stamp): no task per answer. Answers what ``race`` would."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        ended: list[str] = []  # why this answer was cut short, if it was
        timer: asyncio.TimerHandle

        def cut(reason: str) -> None:
            if not ended:
                ended.append(reason)
                task.cancel()

        def check() -> None:
            nonlocal timer
            since, now = self._writing_since, loop.time()
            if since is not None and now - since >= self._stall_timeout:
                log.info("the client read nothing for %gs: answer cut short", now - since)
                cut("stalled")
                return
            timer = loop.call_at((now if since is None else since) + self._stall_timeout, check)

        timer = loop.call_at(loop.time() + self._stall_timeout, check)
        gone.watch(lambda: cut("gone"))
        try:
            await self._stream(scope, send)
        except asyncio.CancelledError as error:
            if not ended or task.uncancel() > 0:
                raise  # not ours (the server's shutdown): on as it is
            return error
        except Exception as error:
            return error
        finally:
            gone.watch(None)
            timer.cancel()
        return None
