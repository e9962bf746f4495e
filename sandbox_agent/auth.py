"""The agent token: ``X-Convoy-Token`` on every route but ``/health`` and ``/ready``.

Compared in constant time. An agent started unprotected (no token) accepts
every request; the CLI refuses to start that way unless told to. A spare (no
conversation yet) accepts no token at all.
"""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.websockets import WebSocket, WebSocketState

from sandbox_agent.protocol import TOKEN_HEADER, WS_CLOSE_UNAUTHORIZED


def token_ok(connection: HTTPConnection) -> bool:
    """Whether ``connection`` (HTTP request or WebSocket) carries the agent token."""
    agent = connection.app.state.agent
    if agent.spare:
        return False  # a spare serves no conversation: only /ready and /claim (its own secret)
    expected: str | None = agent.settings.token
    if expected is None:
        return bool(connection.app.state.agent.settings.unprotected)
    given = connection.headers.get(TOKEN_HEADER)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def require_token(request: Request) -> None:
    """401 unless the request carries the agent token: every token route's first step
    (a FastAPI dependency in the documents)."""
    if not token_ok(request):
        raise HTTPException(401, f"missing or wrong {TOKEN_HEADER}")


async def websocket_authorized(websocket: WebSocket) -> bool:
    """Whether ``websocket`` carries the agent token.

    When it does not, the socket is closed with 4401 (WS_CLOSE_UNAUTHORIZED),
    accepting the handshake first if the caller had not, so the peer learns why;
    the caller then just returns. The token is checked after the handshake
    because a browser cannot read an HTTP answer to a refused upgrade.
    """
    if token_ok(websocket):
        return True
    if websocket.client_state == WebSocketState.CONNECTING:
        await websocket.accept()
    await websocket.close(WS_CLOSE_UNAUTHORIZED, "missing or wrong token")
    return False
