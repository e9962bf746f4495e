"""WebSocket proxy between one client and one sandbox agent's ``/ws``.

:func:`connect_upstream` opens the agent's event stream (token in the
handshake header); :func:`proxy_frames` passes frames both ways until one side closes,
then closes the other with the same code where that code may be sent:

- upstream closed with a sendable code (1000, 4008 too slow, ...) -> that code;
- upstream closed without one (1005) -> 1000; abnormally (1006, ...) -> 4502
  ``WS_CLOSE_UPSTREAM_UNAVAILABLE``;
- the conversation ended meanwhile (deleted, reaped) -> 4410
  ``WS_CLOSE_CONVERSATION_ENDED`` (decided by the caller's ``ended()``);
- the client closed -> upstream gets the client's code (1000 when unsendable).

Text frames are passed on as they are, never parsed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection

from gateway.runtimes.base import SandboxHandle
from gateway.settings import Settings
from sandbox_agent.protocol import TOKEN_HEADER, WS_CLOSE_CONVERSATION_ENDED, WS_CLOSE_UPSTREAM_UNAVAILABLE
from sandbox_agent.race import race


class UpstreamUnavailable(Exception):
    """The agent's WebSocket could not be opened."""


def sendable(code: int | None) -> int:
    """A close code that may go on the wire in place of an upstream's ``code``."""
    if code == 1005:  # closed without a code: a normal close
        return 1000
    if code is None or code in (1004, 1006, 1015) or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        return WS_CLOSE_UPSTREAM_UNAVAILABLE
    return code


async def connect_upstream(handle: SandboxHandle, after_seq: int, settings: Settings) -> ClientConnection:
    url = f"ws{handle.base_url.removeprefix('http')}/ws?after_seq={after_seq}"
    try:
        return await websockets.connect(
            url,
            additional_headers={TOKEN_HEADER: handle.token},
            max_size=settings.ws_max_message_bytes,
            max_queue=256,
            compression=None,
            open_timeout=settings.proxy_connect_timeout,
            ping_interval=None,  # loopback or a private network: the agent's liveness is watched elsewhere
            proxy=None,
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
        raise UpstreamUnavailable(f"the sandbox's event stream could not be opened: {error}") from None


async def _upstream_to_client(upstream: ClientConnection, websocket: WebSocket) -> None:
    send = websocket.send
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in upstream:
            if isinstance(message, str):
                await send({"type": "websocket.send", "text": message})
            else:
                await send({"type": "websocket.send", "bytes": message})


async def _client_to_upstream(
    websocket: WebSocket, upstream: ClientConnection, on_frame: Callable[[], None]
) -> int:
    """Returns the client's close code."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or 1000)
        on_frame()
        text = message.get("text")
        await upstream.send(text if text is not None else message.get("bytes") or b"")


async def proxy_frames(
    websocket: WebSocket,
    upstream: ClientConnection,
    *,
    ended: Callable[[], bool],
    on_frame: Callable[[], None] = lambda: None,
) -> None:
    """Pass frames between the accepted ``websocket`` and ``upstream`` until either
    closes; close the other side as the module docstring says."""
    sent_down, client_closed = await race(
        _upstream_to_client(upstream, websocket), _client_to_upstream(websocket, upstream, on_frame)
    )
    client_code = client_closed if isinstance(client_closed, int) else None
    if client_code is not None or isinstance(sent_down, OSError | RuntimeError | WebSocketDisconnect):
        # The client left: tell the agent why, politely.
        code = client_code if client_code is not None else 1001
        await upstream.close(code if code in range(3000, 5000) or code in (1000, 1001) else 1000)
        return
    await upstream.close()
    code = WS_CLOSE_CONVERSATION_ENDED if ended() else sendable(upstream.close_code)
    reason = "the conversation ended" if code == WS_CLOSE_CONVERSATION_ENDED else upstream.close_reason or ""
    await close_client(websocket, code, reason)


async def close_client(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close an accepted client, whatever state it is in (a gone client is fine)."""
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(code, reason[:120])
