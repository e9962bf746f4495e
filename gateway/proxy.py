"""HTTP proxying of one request to one sandbox agent, streamed both ways.

Contracts:
- One pool of keep-alive connections (httpcore: the proxy needs no more than
  that, and every layer costs on the per-request latency).
- The request body is streamed upstream as it arrives (``request.stream()``),
  the response body streamed back as it arrives: a 1 GiB upload or download
  never sits in gateway memory. Small answers with a known length are read
  whole (one write instead of a stream: faster for the common case).
- Hop-by-hop headers are dropped both ways; the caller's ``Authorization``,
  cookies and ``?token=`` never reach the agent; the agent token is added
  upstream and never appears in an answer. No cookie jar: the shared client
  refuses every cookie, so nothing of one user's exchange reaches another's.
- The upstream response is always closed: at the end, on error, and when the
  client disconnects mid-stream.
- Upstream failures answer JSON: 502 (cannot connect, broken answer),
  504 (no answer within ``proxy_timeout``). Downloads (``file-content``) have
  no read timeout once they started: a large file may take its time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, Callable
from contextlib import AbstractContextManager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import parse_qsl, urlencode

import httpcore
import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import UpstreamTimeout, UpstreamUnreachable, error_response
from gateway.runtimes.base import SandboxHandle
from gateway.settings import Settings
from sandbox_agent.protocol import TOKEN_HEADER
from sandbox_agent.race import race

log = logging.getLogger("convoy.gateway")

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers"}
    | {"transfer-encoding", "upgrade"}
)
_NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "cookie", TOKEN_HEADER.lower()}
_NOT_RETURNED = HOP_BY_HOP | {"set-cookie", "server", "date", TOKEN_HEADER.lower()}
_READ_WHOLE_BELOW = 256 * 1024


def _dropped(headers: list[tuple[bytes, bytes]], always: frozenset[str]) -> frozenset[str]:
    """``always`` plus the headers that a ``Connection`` header names as hop-by-hop."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    return always | named if named else always


def upstream_path(request: Request) -> str:
    """The agent's path for a gateway path: ``/conversation/{id}/rest`` -> ``/rest``,
    percent-encoding kept exactly as the client sent it."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    rest = raw.split(b"?", 1)[0].split(b"/", 3)
    return "/" + (rest[3].decode("latin-1") if len(rest) > 3 else "")


def _query(request: Request) -> str:
    query: bytes = request.scope.get("query_string", b"")
    if b"token=" not in query:
        return query.decode("latin-1")
    # The caller's key may be in ?token=: it stays here.
    pairs = [(k, v) for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k != "token"]
    return urlencode(pairs)


class UpstreamResponse(Response):
    """Streams an open upstream response to the client and always closes it,
    also when the client goes away (watched for concurrently: a server that does
    not raise on a write to a gone client must not keep us reading upstream)."""

    def __init__(
        self,
        upstream: httpcore.Response,
        headers: list[tuple[bytes, bytes]],
        activity: AbstractContextManager[None],
    ) -> None:
        self.status_code = upstream.status
        self.raw_headers = headers
        self.background = None
        self._upstream = upstream
        self._activity = activity

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in _body(self._upstream):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _UPSTREAM_ERRORS as error:
            log.info("upstream broke off mid-answer: %r", error)
            return  # the server ends the connection: the client sees an incomplete answer
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._activity:
            try:
                streamed, _ = await race(self._stream(send), self._disconnected(receive))
            finally:
                await self._upstream.aclose()
        if isinstance(streamed, Exception) and not isinstance(streamed, OSError):
            log.warning("streaming an answer failed: %r", streamed)


def _body(upstream: httpcore.Response) -> AsyncIterable[bytes]:
    stream = upstream.stream
    assert isinstance(stream, AsyncIterable)
    return stream


_UPSTREAM_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException)


class Proxy:
    """Forwards requests to agents over one connection pool (keep-alive, no
    cookies, no proxy from the environment). ``client`` is an httpx client for
    the gateway's own small calls to agents (``/status``, ``/task``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=None, max_keepalive_connections=512, keepalive_expiry=30.0
        )
        timeout = settings.proxy_timeout
        connect = settings.proxy_connect_timeout
        self._timeouts = {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}
        self._download_timeouts = {**self._timeouts, "read": None}
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect),
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            trust_env=False,  # a proxy from the environment must never see loopback traffic or tokens
        )

    async def forward(
        self,
        request: Request,
        handle: SandboxHandle,
        *,
        download: bool = False,
        activity: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> Response:
        """Send ``request`` to the same route of the agent of ``handle`` and answer with its answer."""
        raw_headers: list[tuple[bytes, bytes]] = request.scope["headers"]
        dropped = _dropped(raw_headers, _NOT_FORWARDED)
        headers = [(n, v) for n, v in raw_headers if n.decode("latin-1").lower() not in dropped]
        host = handle.base_url.split("://", 1)[1].encode()
        headers += [(b"host", host), (TOKEN_HEADER.encode(), handle.token.encode())]
        length = any(n == b"content-length" for n, _ in raw_headers)
        chunked = not length and any(n == b"transfer-encoding" for n, _ in raw_headers)
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        query = _query(request)
        url = f"{handle.base_url}{upstream_path(request)}{'?' + query if query else ''}"
        outgoing = httpcore.Request(
            request.method,
            url,
            headers=headers,
            content=request.stream() if length or chunked else None,
            extensions={"timeout": self._download_timeouts if download else self._timeouts},
        )
        try:
            with activity():
                upstream = await self._pool.handle_async_request(outgoing)
        except httpcore.TimeoutException:
            raise UpstreamTimeout(
                f"the sandbox did not answer within {self._settings.proxy_timeout:g}s"
            ) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as error:
            raise UpstreamUnreachable(
                f"the sandbox could not be reached: {error.__class__.__name__}"
            ) from None
        except ClientDisconnect:
            return error_response(400, "the client went away during the request")
        dropped = _dropped(upstream.headers, _NOT_RETURNED)
        back = [(n.lower(), v) for n, v in upstream.headers if n.decode("latin-1").lower() not in dropped]
        size = next((v for n, v in back if n == b"content-length"), None)
        if not download and size is not None and size.isdigit() and int(size) < _READ_WHOLE_BELOW:
            try:
                body = b"".join([chunk async for chunk in _body(upstream)])
            except _UPSTREAM_ERRORS as error:
                raise UpstreamUnreachable(
                    f"the sandbox's answer broke off: {error.__class__.__name__}"
                ) from None
            finally:
                await upstream.aclose()
            response = Response(body, status_code=upstream.status)
            response.raw_headers = back
            return response
        return UpstreamResponse(upstream, back, activity())

    async def close(self) -> None:
        await self._pool.aclose()
        await self.client.aclose()
