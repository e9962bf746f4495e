"""``/port/{port}/{path}``: a server listening on the sandbox's loopback, any method and WebSocket.

One HTTP route per method (each its own operationId, ``preview_get`` ...), all
served by :meth:`sandbox_agent.ports.PortForwarder.forward`, and one WebSocket
route (:meth:`~sandbox_agent.ports.PortForwarder.relay_websocket`). The gateway
serves them under ``/conversation/{id}`` through its preview layer
(:mod:`gateway.preview`), which documents them from these declarations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from sandbox_agent.agent import Agent
from sandbox_agent.auth import websocket_authorized
from sandbox_agent.protocol import ErrorBody
from sandbox_agent.routes import Responses, get_agent, token_router
from sandbox_agent.routes.decl import Depends, Path, Router

router = token_router("ports")
sockets = Router()

TEMPLATE = "/port/{port}/{path:path}"
#: The methods a preview answers, each declared as its own operation.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_Port = Path(ge=1, le=65535, description="A TCP port a server listens on inside the sandbox (127.0.0.1)")
_Path = Path(description="The path on that server, without its leading /")
_ANSWERS: Responses = {
    200: {"description": "The server's answer, streamed as it sent it (any status, type and body)"},
    502: {"model": ErrorBody, "description": "Nothing listens on the port, or it gave no valid answer"},
    504: {"model": ErrorBody, "description": "The server on the port did not answer in time"},
}
_DESCRIPTION = (
    "Streamed both ways to `127.0.0.1:{port}/{path}` inside the sandbox, with the query as it came. "
    "A WebSocket upgrade on the same path is relayed the same way (close 4502 when its server "
    "cannot be reached)."
)


def _preview(method: str) -> Callable[..., Awaitable[Response]]:
    async def endpoint(
        request: Request, port: int = _Port, path: str = _Path, agent: Agent = Depends(get_agent)
    ) -> Response:
        return await agent.ports.forward(request, port, path)

    endpoint.__name__ = endpoint.__qualname__ = f"preview_{method.lower()}"
    return endpoint


for _method in METHODS:
    router.add_api_route(
        TEMPLATE,
        _preview(_method),
        methods=[_method],
        response_class=Response,
        responses=_ANSWERS,
        summary=f"{_method} on a server in the sandbox (preview port)",
        description=_DESCRIPTION,
    )


@sockets.websocket(TEMPLATE)
async def preview_websocket(websocket: WebSocket, port: int, path: str) -> None:
    if not await websocket_authorized(websocket):
        return
    agent: Agent = websocket.app.state.agent
    await agent.ports.relay_websocket(websocket, port, path)
