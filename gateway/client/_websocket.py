"""The client's WebSockets to a gateway: opening one (a refused handshake becomes the mapped
:class:`ConvoyError`) and :class:`WebSocket`, frames in and out. The one client module that
imports websockets: its errors end here."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from gateway.client._answers import why
from gateway.client._exceptions import (
    GatewayUnavailable,
    UnexpectedResponse,
    WebSocketClosed,
    error_for_status,
)

#: Largest WebSocket frame accepted (an event is bounded by the agent's max_event_bytes).
WS_MAX_FRAME = 64 * 1024 * 1024


async def open_websocket(
    url: str, headers: Mapping[str, str], open_within: float, path: str, gateway: str
) -> WebSocket:
    """A WebSocket to ``url`` (``path`` on the gateway at ``gateway``, for the messages), its
    handshake done within ``open_within`` seconds."""
    try:
        connection = await websockets.connect(
            url,
            additional_headers=dict(headers),
            max_size=WS_MAX_FRAME,
            open_timeout=open_within,
            close_timeout=5,
        )
    except websockets.InvalidStatus as exc:
        response = exc.response
        detail: Any = None
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            body = json.loads(response.body or b"null")
            detail = body.get("detail") if isinstance(body, dict) else None
        raise error_for_status(response.status_code, detail, f"WS {path}") from None
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        raise GatewayUnavailable(f"cannot open a WebSocket to {gateway}: {why(exc)}") from None
    return WebSocket(connection, f"WS {path}")


class WebSocket:
    """One open WebSocket to the gateway: text or JSON frames out, frames in (a binary one as bytes).

    A send or receive on a closed connection raises :class:`WebSocketClosed`; ``async for``
    yields frames until the connection closes, however it closes, and then ends:
    :attr:`close_code` and :attr:`close_reason` say why. Use as ``async with`` or call :meth:`close`.
    """

    def __init__(self, connection: ClientConnection, what: str) -> None:
        self._ws = connection
        self._what = what

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 when it dropped without one); ``None`` while open."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason or ""

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_json(self, value: Any) -> None:
        await self._send(json.dumps(value))

    async def send_bytes(self, data: bytes) -> None:
        """A binary frame."""
        await self._send(data)

    async def recv(self) -> str | bytes:
        """The next frame: ``str`` for a text frame, ``bytes`` for a binary one."""
        try:
            return await self._ws.recv()
        except websockets.ConnectionClosed:
            raise self._closed() from None

    async def recv_json(self) -> Any:
        frame = await self.recv()
        try:
            return json.loads(frame)
        except ValueError:
            raise UnexpectedResponse(f"{self._what}: a frame that is not JSON") from None

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except websockets.ConnectionClosed:
            raise StopAsyncIteration from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (a no-op when it is closed already); never raises for a broken one."""
        with contextlib.suppress(websockets.WebSocketException, OSError):
            await self._ws.close(code, reason)

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except websockets.ConnectionClosed:
            raise self._closed() from None

    def _closed(self) -> WebSocketClosed:
        code, reason = self.close_code, self.close_reason
        error = WebSocketClosed(
            f"{self._what} closed ({code}{': ' + reason if reason else ''})", code=code, reason=reason
        )
        error.request = self._what
        return error
