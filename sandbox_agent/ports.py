"""The hop to a server inside the sandbox: ``/port/{port}/{path}`` -> ``127.0.0.1:{port}/{path}``.

The gateway cannot reach the sandbox's loopback; the agent can. :class:`PortForwarder`
relays one request (any method; :mod:`sandbox_agent.port_http`, loaded on the first)
or one WebSocket to a port on the sandbox's own loopback and the answer back.

Contracts:
- Streamed both ways, never buffered whole: the request body goes on as it
  arrives (``request.stream()``), the answer comes back chunk by chunk
  (httpcore reads at most 64 KiB at a time); a WebSocket holds at most a few
  frames of ``max_event_bytes`` each way. What one relayed exchange costs the
  agent is bounded whatever the body's size.
- The agent's token (``X-Convoy-Token``) and hop-by-hop headers never reach the
  server; ``Host`` is ``127.0.0.1:{port}`` (what a dev server expects); every
  other header passes as it is, both ways (cookies included: the gateway decides
  which of them may cross, see :mod:`gateway.preview`).
- The path is the decoded ``{path}`` re-quoted segment by segment; the query
  goes as it came.
- Nobody listening on the port is a JSON 502 that says so; no answer (headers)
  within ``port_timeout`` a JSON 504. An answer that breaks off mid-body ends the
  connection (the client sees an incomplete answer). A WebSocket whose server
  cannot be reached is accepted and closed with 4502
  (``WS_CLOSE_UPSTREAM_UNAVAILABLE``) and the reason.
- The upstream connection is always closed: at the end, on error, and when the
  client goes away mid-answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

import websockets
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from sandbox_agent.protocol import TOKEN_HEADER, WS_CLOSE_UPSTREAM_UNAVAILABLE
from sandbox_agent.race import race

if TYPE_CHECKING:  # both loaded on first use (``websockets.connect`` loads its client)
    from websockets.asyncio.client import ClientConnection

    from sandbox_agent.port_http import LocalHTTP

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers"}
    | {"transfer-encoding", "upgrade"}
)
NOT_FORWARDED = HOP_BY_HOP | {"host", TOKEN_HEADER.lower()}
#: What the WebSocket client library writes itself in the upstream handshake.
_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"})
NOT_FORWARDED_WS = NOT_FORWARDED | _HANDSHAKE | {"sec-websocket-protocol", "origin"}
#: Frames the upstream WebSocket holds before it stops reading (the pump takes them at once).
_WS_MAX_QUEUE = 4


def local_target(port: int, path: str, query: bytes) -> str:
    """``/{path}?{query}`` for the server on ``port``: the decoded path re-quoted per segment."""
    quoted = "/".join(quote(segment, safe="!$&'()*+,;=:@~") for segment in path.split("/"))
    return f"/{quoted}" + (f"?{query.decode('latin-1')}" if query else "")


def forwarded(headers: list[tuple[bytes, bytes]], dropped: frozenset[str]) -> list[tuple[bytes, bytes]]:
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    } - {"content-length"}
    skip = dropped | named
    return [(n, v) for n, v in headers if n.decode("latin-1").lower() not in skip]


class PortForwarder:
    """One keep-alive pool to the sandbox's loopback servers; see the module docstring."""

    def __init__(self, timeout: float, max_message_bytes: int) -> None:
        self._http: LocalHTTP | None = None  # HTTP relaying, made on the first request
        self._timeout = timeout
        self._max_message_bytes = max_message_bytes

    async def forward(self, request: Request, port: int, path: str) -> Response:
        """Relay ``request`` to ``127.0.0.1:{port}/{path}`` and answer with its answer."""
        if self._http is None:
            from sandbox_agent.port_http import LocalHTTP  # on first use: see its docstring

            self._http = LocalHTTP(self._timeout)
        return await self._http.forward(request, port, path)

    async def relay_websocket(self, websocket: WebSocket, port: int, path: str) -> None:
        """Open ``ws://127.0.0.1:{port}/{path}`` with the client's subprotocols, accept the
        client with the one the server chose, then pump frames both ways until one side
        closes; the other gets the same close code."""
        scope = websocket.scope
        target = local_target(port, path, scope.get("query_string", b""))
        headers = forwarded(scope["headers"], NOT_FORWARDED_WS)
        origin = websocket.headers.get("origin")
        try:
            upstream = await websockets.connect(
                f"ws://127.0.0.1:{port}{target}",
                additional_headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers],
                subprotocols=[websockets.Subprotocol(p) for p in scope.get("subprotocols", [])] or None,
                origin=websockets.Origin(origin) if origin else None,
                max_size=self._max_message_bytes,
                max_queue=_WS_MAX_QUEUE,
                compression=None,
                open_timeout=self._timeout,
                ping_interval=None,
                proxy=None,
                user_agent_header=None,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as error:
            await websocket.accept()
            reason = f"the WebSocket on port {port} could not be opened: {error}"
            await websocket.close(WS_CLOSE_UPSTREAM_UNAVAILABLE, reason[:120])
            return
        try:
            await websocket.accept(subprotocol=upstream.subprotocol)
            await _pump(websocket, upstream)
        finally:
            await upstream.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


async def _client_to_server(websocket: WebSocket, upstream: ClientConnection) -> int:
    """Returns the client's close code."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or 1000)
        text = message.get("text")
        await upstream.send(text if text is not None else message.get("bytes") or b"")


async def _server_to_client(upstream: ClientConnection, websocket: WebSocket) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for frame in upstream:
            if isinstance(frame, str):
                await websocket.send_text(frame)
            else:
                await websocket.send_bytes(frame)


def _sendable(code: int | None) -> int:
    if code is None or code in (1005, 1006, 1015):
        return 1000 if code == 1005 else WS_CLOSE_UPSTREAM_UNAVAILABLE
    return code if 1000 <= code <= 1014 or 3000 <= code <= 4999 else 1000


async def _pump(websocket: WebSocket, upstream: ClientConnection) -> None:
    up, _ = await race(_client_to_server(websocket, upstream), _server_to_client(upstream, websocket))
    if isinstance(up, int):  # the client left: the server hears the same code
        await upstream.close(up if up in range(3000, 5000) or up in (1000, 1001) else 1000)
        return
    if isinstance(up, Exception) and not isinstance(up, asyncio.CancelledError | websockets.ConnectionClosed):
        log.info("relaying to the sandbox's WebSocket failed: %r", up)
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(_sendable(upstream.close_code), (upstream.close_reason or "")[:120])
