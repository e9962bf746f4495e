"""``WS /conversation/{id}/terminal/{terminal_id}?offset=N``: one viewer of a sandbox's terminal.

The route (:mod:`gateway.routes.ws`) authenticates and finds the caller's
conversation (another user's, or an id that is not a UUID, closes 4404 like an
unknown one); this module waits for it to be READY (as every proxied request
does), opens the agent's ``/terminal/{terminal_id}?offset=N`` and relays frames
both ways as they are (:func:`gateway.wsproxy.proxy_frames`): binary frames are
the terminal's bytes, text frames its JSON control frames (resize in; skipped,
exit and error out). The agent's close codes come through (4404 unknown
terminal, 1008 bad offset, 1000 after the exit frame); a conversation that ends
meanwhile closes 4410, a sandbox that cannot be reached 4502, a viewer that stalls
4008 (it resumes with ``offset`` = the bytes it received, and misses nothing).
"""

from __future__ import annotations

from uuid import UUID

from starlette.websockets import WebSocket, WebSocketState

from gateway.context import GatewayContext
from gateway.errors import GatewayError
from gateway.records import Record
from gateway.wsproxy import UpstreamUnavailable, close_client, connect_agent_socket, proxy_frames
from sandbox_agent.protocol import (
    WS_CLOSE_CONVERSATION_ENDED,
    WS_CLOSE_UPSTREAM_UNAVAILABLE,
    ConversationStatus,
)


async def relay_terminal(
    websocket: WebSocket, context: GatewayContext, record: Record, terminal_id: UUID, offset: int
) -> None:
    manager = context.manager
    with manager.connection(record):
        try:
            handle = await manager.ready_handle(record)
        except GatewayError as error:
            await _refuse(websocket, WS_CLOSE_CONVERSATION_ENDED, error.detail)
            return
        try:
            with manager.pausing.watching(record):  # paused through another gateway: resumed
                upstream = await connect_agent_socket(
                    handle, f"/terminal/{terminal_id}?offset={offset}", context.settings
                )
        except UpstreamUnavailable as error:
            await _refuse(websocket, WS_CLOSE_UPSTREAM_UNAVAILABLE, str(error))
            return
        await websocket.accept()

        def ended() -> bool:
            return manager.lookup(record.id) is not record or record.status is not ConversationStatus.READY

        await proxy_frames(
            websocket,
            upstream,
            ended=ended,
            on_frame=lambda: manager.touch(record),
            settings=context.settings,
        )


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.client_state is WebSocketState.CONNECTING:
        await websocket.accept()
    await close_client(websocket, code, reason)
