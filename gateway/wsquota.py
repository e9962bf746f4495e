"""At most ``max_websockets_per_principal`` WebSockets per principal at once.

An ASGI middleware in front of every WebSocket route: each socket costs the
gateway up to ``ws_send_buffer_bytes`` while its client falls behind, so one
principal's share is bounded by the number of sockets it may hold.

Contract:
- A socket counts from its handshake until its route returns (a closed or
  dropped socket frees its place at once).
- Beyond the cap the socket is accepted, gets one ``Error`` frame (seq 0, nil
  conversation id) saying which limit, and is closed with 4429
  (``WS_CLOSE_LIMIT_REACHED``): a browser can read both, unlike an HTTP 429.
- A socket whose caller cannot be authenticated is passed on uncounted: its
  route refuses it (4401/4403) and it costs nothing more.
- Admins are principals too; in local mode everyone is the one local admin.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from uuid import UUID, uuid4

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.auth import AuthError
from gateway.context import GatewayContext
from gateway.wsproxy import close_client
from sandbox_agent.protocol import WS_CLOSE_LIMIT_REACHED, ErrorEvent, Event


class WebSocketQuota:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._open: Counter[str] = Counter()

    def open_count(self, principal: str) -> int:
        return self._open[principal]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = getattr(scope["app"].state, "gateway", None) if scope["type"] == "websocket" else None
        if not isinstance(context, GatewayContext):
            await self.app(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        try:
            name = context.auth.authenticate(websocket).name
        except AuthError:
            await self.app(scope, receive, send)
            return
        limit = context.settings.max_websockets_per_principal
        if self._open[name] >= limit:
            await _refuse(websocket, f"at most {limit} WebSockets may be open at once per principal")
            return
        self._open[name] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._open[name] -= 1
            if not self._open[name]:
                del self._open[name]


async def _refuse(websocket: WebSocket, message: str) -> None:
    await websocket.accept()
    frame = Event(
        id=uuid4(),
        seq=0,
        conversation_id=UUID(int=0),
        created_at=datetime.now(UTC),
        detail=ErrorEvent(message=message),
    )
    try:
        await websocket.send_text(frame.model_dump_json())
    except (OSError, RuntimeError, WebSocketDisconnect):  # gone already
        return
    await close_client(websocket, WS_CLOSE_LIMIT_REACHED, message)
