"""How the gateway reaches an agent at a handle's ``base_url``: over TCP, or over a Unix socket.

A :attr:`~gateway.runtimes.base.SandboxHandle.base_url` is ``http://HOST:PORT`` for an
agent listening on TCP, or ``http+unix://<socket path>`` (made by :func:`unix_url`) for
one listening on a Unix socket: a sandbox with no network at all (the Docker runtime's
default, see :mod:`gateway.runtimes.docker`). Callers append paths to either as they
always did; every client the gateway talks to agents with understands both:

- httpx: a client built with ``transport=AgentTransport()``;
- aiohttp: a session built with ``connector=AgentConnector(...)``;
- websockets: :func:`connect_websocket` instead of ``websockets.connect``.

A client without them fails loudly on a socket address (an unknown scheme), never
reaches anything else. The socket path is carried in the URL's host, every byte but
lower-case letters, digits and ``-._~`` percent-encoded (httpx lower-cases hosts; an
encoded upper-case letter survives that). Connections are pooled per socket, as per
``HOST:PORT`` over TCP.
"""

from __future__ import annotations

import asyncio
import string
import typing
from typing import Any
from urllib.parse import unquote

import aiohttp
import httpcore
import httpx
from websockets.asyncio.client import connect, unix_connect

__all__ = [
    "UNIX_SCHEME",
    "AgentConnector",
    "AgentTransport",
    "connect_websocket",
    "host_header",
    "socket_of",
    "unix_url",
]

UNIX_SCHEME = "http+unix"
_PREFIX = f"{UNIX_SCHEME}://"
_KEPT = frozenset(string.ascii_lowercase + string.digits + "-._~")
#: What an agent on a socket is told it is called (its Host header): the path means nothing to it.
_UNIX_HOST = "localhost"


def unix_url(path: str) -> str:
    """The ``base_url`` of an agent listening on the Unix socket ``path`` (absolute)."""
    if not path.startswith("/"):
        raise ValueError(f"a socket address needs an absolute path, not {path!r}")
    encoded = (ch if ch in _KEPT else "".join(f"%{byte:02X}" for byte in ch.encode()) for ch in path)
    return _PREFIX + "".join(encoded)


def socket_of(base_url: str) -> str | None:
    """The socket path of a :func:`unix_url` (with or without a path after it); ``None`` for TCP."""
    if not base_url.startswith(_PREFIX):
        return None
    host = base_url[len(_PREFIX) :].split("/", 1)[0].split("?", 1)[0]
    return unquote(host)


def _host_path(host: str) -> str | None:
    """The socket path a URL's (encoded) host names, as a client library hands it over."""
    return unquote(host) if host[:3].lower() == "%2f" else None


def host_header(base_url: str) -> str:
    """The ``Host`` an agent at ``base_url`` is sent."""
    return _UNIX_HOST if socket_of(base_url) is not None else base_url.split("://", 1)[1]


# --- httpx -----------------------------------------------------------------------------


class _SocketHosts(httpcore.AsyncNetworkBackend):
    """TCP as usual, but a "host" that is an encoded socket path connects to that socket."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        path = _host_path(host)
        if path is not None:
            return await self._backend.connect_unix_socket(path, timeout, socket_options)
        return await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._backend.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class AgentTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its error mapping included), with one connection pool for
    agents on TCP and on Unix sockets alike; never a proxy from the environment."""

    #: httpx's own defaults (what a client without this transport would get).
    DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

    def __init__(self, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        super().__init__(trust_env=False, limits=limits)
        # The pool httpx made, rebuilt with a network backend that knows socket addresses.
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_SocketHosts(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == UNIX_SCHEME:
            request.url = request.url.copy_with(scheme="http")
            request.headers["Host"] = _UNIX_HOST
        return await super().handle_async_request(request)


# --- aiohttp ---------------------------------------------------------------------------


class AgentConnector(aiohttp.TCPConnector):
    """A TCP connector that also connects ``http+unix://`` URLs to their socket (pooled
    per socket: the pool's key is the URL's host, the encoded path)."""

    allowed_protocol_schema_set = aiohttp.TCPConnector.allowed_protocol_schema_set | {UNIX_SCHEME}

    async def _create_connection(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Any],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> aiohttp.client_proto.ResponseHandler:
        if req.url.scheme != UNIX_SCHEME:
            return await super()._create_connection(req, traces, timeout)
        path = unquote(req.url.raw_host or "")
        try:
            async with asyncio.timeout(timeout.sock_connect):
                _, protocol = await self._loop.create_unix_connection(self._factory, path)
        except OSError as error:
            raise aiohttp.ClientConnectorError(req.connection_key, error) from error
        return protocol


# --- websockets ------------------------------------------------------------------------


def connect_websocket(base_url: str, path: str, **options: Any) -> connect:
    """``websockets.connect`` to ``path`` (with its query) of the agent at ``base_url``."""
    socket = socket_of(base_url)
    if socket is None:
        return connect(f"ws{base_url.removeprefix('http')}{path}", **options)
    options.pop("proxy", None)  # a socket has no proxy
    return unix_connect(socket, f"ws://{_UNIX_HOST}{path}", **options)
