"""The HTTP half of :class:`sandbox_agent.ports.PortForwarder`: one request relayed to a
server on the sandbox's loopback over a keep-alive httpcore pool (contracts: see
:mod:`sandbox_agent.ports`).

Imported on the first preview request only: httpcore and what it imports are 2 MB of
every idle sandbox's memory otherwise, and most conversations never preview a port.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable

import httpcore
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox_agent.errors import PortTimeout, PortUnreachable, error_response
from sandbox_agent.ports import HOP_BY_HOP, NOT_FORWARDED, forwarded, local_target
from sandbox_agent.race import race

log = logging.getLogger("sandbox_agent.ports")

_UPSTREAM_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException)


class _StreamedAnswer(Response):
    """The local server's answer, streamed to the client; the upstream always closed."""

    def __init__(self, upstream: httpcore.Response, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = upstream.status
        self.raw_headers = headers
        self.background = None
        self._upstream = upstream

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        stream = self._upstream.stream
        assert isinstance(stream, AsyncIterable)
        try:
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _UPSTREAM_ERRORS as error:
            log.info("the server in the sandbox broke off mid-answer: %r", error)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await race(self._stream(send), self._disconnected(receive))
        finally:
            await self._upstream.aclose()


class LocalHTTP:
    """One keep-alive pool to the sandbox's loopback servers."""

    def __init__(self, timeout: float) -> None:
        self._pool = httpcore.AsyncConnectionPool(max_keepalive_connections=16, keepalive_expiry=10.0)
        self._timeout = timeout
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}

    async def forward(self, request: Request, port: int, path: str) -> Response:
        """Relay ``request`` to ``127.0.0.1:{port}/{path}`` and answer with its answer."""
        raw: list[tuple[bytes, bytes]] = request.scope["headers"]
        headers = forwarded(raw, NOT_FORWARDED)
        headers.append((b"host", f"127.0.0.1:{port}".encode()))
        length = any(n == b"content-length" for n, _ in raw)
        chunked = not length and any(n == b"transfer-encoding" for n, _ in raw)
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        target = local_target(port, path, request.scope.get("query_string", b""))
        outgoing = httpcore.Request(
            request.method,
            f"http://127.0.0.1:{port}{target}",
            headers=headers,
            content=request.stream() if length or chunked else None,
            extensions={"timeout": self._timeouts},
        )
        try:
            upstream = await self._pool.handle_async_request(outgoing)
        except httpcore.ConnectError:
            raise PortUnreachable(f"nothing listens on port {port} in the sandbox") from None
        except httpcore.TimeoutException:
            raise PortTimeout(f"the server on port {port} did not answer within {self._timeout:g}s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as error:
            raise PortUnreachable(
                f"the server on port {port} gave no valid answer: {error.__class__.__name__}"
            ) from None
        except ClientDisconnect:
            return error_response(400, "the client went away during the request")
        back = [(n.lower(), v) for n, v in forwarded(upstream.headers, HOP_BY_HOP)]
        return _StreamedAnswer(upstream, back)

    async def close(self) -> None:
        await self._pool.aclose()
