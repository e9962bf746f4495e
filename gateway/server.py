"""``run_server(settings)``: the gateway under uvicorn, blocking until stopped.

Refuses (``SystemExit`` with a message, non-zero) to listen on a non-loopback
address without keys: local single-user mode makes everyone an admin, which is
only safe where nobody else can connect.

What a client costs the server before the app sees a request is bounded here
(:func:`guarded_http_protocol`), and keys in query strings never reach a log
(:class:`RedactTokens`).

What a client that stops reading can pin is bounded at every layer: the routes'
byte-bounded queues (:mod:`gateway.sendqueue`), uvicorn's sansio WebSockets
(write flow control), and the kernel, which drops a connection whose window
stays shut for ``tcp_user_timeout`` seconds (see :func:`set_user_timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from http import HTTPStatus
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.addresses import is_loopback
from gateway.app import create_app
from gateway.client_gone import ClientGone, offer_client_gone
from gateway.requestlog import JsonLines
from gateway.server_transport import ServerTransport
from gateway.settings import Settings
from gateway.splice import offer_splice

log = logging.getLogger("convoy.gateway")

#: After a refusal, what the client still sends is read and dropped this long before the
#: connection closes: closing with unread data would reset it and lose the answer.
_LINGER_SECONDS = 2.0
_TOKEN_IN_QUERY = re.compile(r"(?<=[?&]token=)[^&#\s\"']+")
#: uvicorn's exit status when it could not start.
STARTUP_FAILURE = 3


class RedactTokens(logging.Filter):
    """Replaces the value of every ``token=`` query parameter in a log record
    (uvicorn's access log and its WebSocket lines carry the full query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


def _redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub("[redacted]", text) if "token=" in text else text


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits uvicorn lacks for it; subclassed
    per settings by :func:`guarded_http_protocol`. Every refusal is a JSON body,
    then the connection closes:

    - more than ``max_connections`` open connections (HTTP and WebSocket): 503 at once;
    - a request line and headers over ``max_header_bytes``: 431 as soon as they pass it
      (nothing beyond the cap is parsed or kept);
    - (not a refusal) a connection closed while its request body still arrives is
      half-closed and drained for a moment first, so the client reads the answer;
      an answer's head goes out with its body (:mod:`gateway.server_transport`).
    - a request head (request line and headers) that does not arrive within
      ``header_timeout`` seconds of the connection or of the previous request: 408
      when part of it came (a trickle), a plain close when nothing did (silent).
      Idle keep-alive connections close after uvicorn's ``timeout_keep_alive`` as before.

    Each request's scope offers the :data:`gateway.splice.SPLICE` extension (a body relayed
    from another socket straight to this connection's) and :data:`gateway.client_gone.CLIENT_GONE`
    (told when the connection is lost before the answer completed).
    """

    max_connections = 2048
    max_header_bytes = 64 * 1024
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self.body_unread = False
        self.lingering = False
        self._gone: ClientGone | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._real_transport = cast(asyncio.Transport, transport)
        self._served = ServerTransport(self._real_transport, self, self.loop)
        super().connection_made(self._served)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self._refuse(503, "the gateway has too many open connections; try again later")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)
        gone, self._gone = self._gone, None
        if gone is not None and self.cycle is not None and not self.cycle.response_complete:
            gone.fire()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # read and dropped
        if not self._in_head:
            super().data_received(data)
            return
        room = self.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed up to the cap only: if the head is still not complete there, it is too large.
        self._head_bytes += room
        if room > 0:
            super().data_received(data[:room])
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # refused by the parser, or upgraded to a WebSocket
        if self._in_head:
            self._refuse(431, f"the request line and headers exceed {self.max_header_bytes} bytes")
            return
        self.data_received(data[room:])

    def handle_websocket_upgrade(self) -> None:
        self._cancel_head_timer()
        self.transport = self._real_transport  # the WebSocket protocol writes to the socket itself
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head, self.body_unread = False, True
        self._cancel_head_timer()
        super().on_headers_complete()
        offer_splice(self.scope, self._real_transport, self.cycle, self._served.flush)
        if self.cycle is not None and self.cycle.scope is self.scope:  # not an upgrade
            self._gone = offer_client_gone(self.scope)
        if self.transport is not self._real_transport:  # not upgraded: an answer's head and body in one write
            self._served.hold_next()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self.body_unread = True, 0, False
        if self._head_timer is None:
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # the next head may wait for the answer in progress
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing of a request came: nobody to answer
            return
        self._refuse(408, f"the request head did not arrive within {self.header_timeout:g} seconds")

    def _refuse(self, status: int, detail: str) -> None:
        """Answers ``status`` (JSON), stops parsing, and closes after a short linger."""
        body = json.dumps({"detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.linger()

    def linger(self) -> None:
        """Half-closes (the answer is complete), drops what the client still sends, and
        closes for good after ``_LINGER_SECONDS``: closing with unread data would reset
        the connection, and the client could lose the answer."""
        self.lingering = True
        self._cancel_head_timer()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)


def guarded_http_protocol(settings: Settings) -> type[GuardedHttpProtocol]:
    """:class:`GuardedHttpProtocol` with the limits of ``settings``."""
    return type(
        "GatewayHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "max_connections": settings.max_connections,
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout": settings.header_timeout,
        },
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options the gateway is served with (tests serve it the same way)."""
    return {
        "http": guarded_http_protocol(settings),
        "ws_max_size": settings.ws_max_message_bytes,
        # What a client that stops reading (or floods) costs: this implementation waits for the
        # transport to drain (64 KiB) before each write and stops reading after each message
        # until the route takes it (the legacy one queues ws_max_queue messages of ws_max_size).
        "ws": "websockets-sansio",
    }


def configure_logging(settings: Settings) -> None:
    """The root logger's one handler: text lines (the default) or, with ``log_format=json``,
    one JSON object per line (:class:`gateway.requestlog.JsonLines`). Either way every line
    passes :class:`RedactTokens` (on the handler: it sees uvicorn's records too)."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactTokens())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def run_server(settings: Settings) -> None:
    configure_logging(settings)
    if settings.local_mode and not is_loopback(settings.host):
        raise SystemExit(
            f"convoy: refusing to listen on {settings.host} without API keys: local single-user mode makes "
            "everyone an admin. Set CONVOY_API_KEYS / CONVOY_ADMIN_KEYS, or listen on 127.0.0.1."
        )
    try:
        app = create_app(settings)
    except ValueError as error:
        raise SystemExit(f"convoy: bad settings: {error}") from None
    if settings.local_mode:
        log.info(
            "local single-user mode: no API keys configured, everyone is the local admin (loopback only)"
        )
    log.info(
        "convoy gateway listening on http://%s:%d (runtime: %s)",
        settings.host,
        settings.port,
        settings.runtime,
    )
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactTokens())
    json_logs = settings.log_format == "json"
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        lifespan="on",
        # JSON: uvicorn's records go to the root handler as they are; requests are logged by
        # gateway.requestlog (with their id, route template and principal) instead of uvicorn.
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        access_log=settings.access_log and not json_logs,
        **uvicorn_options(settings),
    )
    listener = config.bind_socket()
    set_user_timeout(listener, settings.tcp_user_timeout)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT: stopped, as uvicorn.run does
        server.run(sockets=[listener])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def set_user_timeout(sock: socket.socket, seconds: float) -> None:
    """``TCP_USER_TIMEOUT`` on the listener, inherited by every connection: the kernel drops
    a connection whose data stays unacknowledged, or whose peer's window stays shut (a
    client that stopped reading), that long, and with it what the gateway still buffered
    for it. 0 (or a platform without it) leaves the kernel's default (many minutes)."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if seconds > 0 and option is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
