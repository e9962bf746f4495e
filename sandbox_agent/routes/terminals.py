"""``/terminal``: create, list, describe, end PTY terminals; ``WS /terminal/{id}?offset=N`` attaches.

The WebSocket (:data:`sockets`, not proxied as HTTP: the gateway relays it from its
own WebSocket route):
- The token is checked after the handshake (4401). An unknown terminal closes
  4404; an ``offset`` that is not an integer >= 0, or past the end, closes 1008.
- Server -> viewer: binary frames carry the output from ``offset`` on, exactly:
  no gap, no duplicate, history then live. Text frames are JSON control frames:
  ``{"type": "skipped", "requested", "offset"}`` when the bytes from ``requested``
  are no longer kept (what follows starts at ``offset``), ``{"type": "exit",
  "exit_code", "size"}`` after the last byte once the terminal has exited, then a
  close with 1000; ``{"type": "error", "message"}`` for a text frame that could
  not be used.
- Viewer -> server: binary frames are typed into the terminal as they are; a text
  frame ``{"type": "resize", "cols", "rows"}`` resizes the PTY.
- A viewer that leaves changes nothing for the terminal or the other viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from sandbox_agent import paging
from sandbox_agent.agent import Agent
from sandbox_agent.auth import websocket_authorized
from sandbox_agent.errors import NotFound
from sandbox_agent.protocol import (
    WS_CLOSE_BAD_QUERY,
    WS_CLOSE_NORMAL,
    WS_CLOSE_NOT_FOUND,
    ErrorBody,
    Page,
    Terminal,
    TerminalCreate,
    TerminalError,
    TerminalExit,
    TerminalResize,
    TerminalSkipped,
)
from sandbox_agent.race import race
from sandbox_agent.routes import get_agent, token_router
from sandbox_agent.routes.decl import Depends, Router
from sandbox_agent.routes.params import Limit, PageId
from sandbox_agent.running_terminal import RunningTerminal

router = token_router("terminals")
sockets = Router(tags=["terminals"])

#: Largest binary frame sent to a viewer.
READ_LIMIT = 256 * 1024


@router.post(
    "/terminal",
    status_code=201,
    response_model=Terminal,
    responses={429: {"model": ErrorBody, "description": "Too many terminals are running"}},
    summary="Start a terminal",
)
async def create_terminal(request: TerminalCreate, agent: Agent = Depends(get_agent)) -> Terminal:
    """Start a command (default: the user's login shell) on a new PTY; attach with
    ``WS .../terminal/{terminal_id}?offset=0``."""
    return await agent.terminals.create(request)


@router.get("/terminal", response_model=Page[Terminal], summary="List terminals")
async def list_terminals(
    agent: Agent = Depends(get_agent), page_id: str | None = PageId, limit: int = Limit
) -> Page[Terminal]:
    """Running and exited terminals, oldest first."""
    after = paging.decode_int(page_id) if page_id else 0
    every = agent.terminals.describe_all()
    results = every[after : after + limit]
    more = after + limit < len(every)
    return Page[Terminal](results=results, next_page_id=paging.encode(after + limit) if more else None)


@router.get("/terminal/{terminal_id}", response_model=Terminal, summary="Get a terminal")
async def get_terminal(terminal_id: UUID, agent: Agent = Depends(get_agent)) -> Terminal:
    """Its status, exit code, size (bytes of output so far) and the oldest offset still kept."""
    return agent.terminals.get(terminal_id).describe()


@router.delete("/terminal/{terminal_id}", response_model=Terminal, summary="End a terminal")
async def delete_terminal(terminal_id: UUID, agent: Agent = Depends(get_agent)) -> Terminal:
    """End its process group (SIGHUP, then SIGTERM and SIGKILL) and forget it and its output;
    answers how it ended."""
    return await agent.terminals.delete(terminal_id)


@sockets.websocket("/terminal/{terminal_id}")
async def attach_terminal(websocket: WebSocket, terminal_id: str) -> None:
    agent: Agent = websocket.app.state.agent
    await websocket.accept()
    if not await websocket_authorized(websocket):
        return
    try:
        terminal = agent.terminals.get(UUID(terminal_id))
    except (ValueError, NotFound):
        await websocket.close(WS_CLOSE_NOT_FOUND, f"no terminal {terminal_id}"[:120])
        return
    offset = _offset(websocket.query_params.get("offset", "0"))
    if offset is None or offset > terminal.spill.size:
        await websocket.close(
            WS_CLOSE_BAD_QUERY, f"offset must be an integer from 0 to {terminal.spill.size} (the size so far)"
        )
        return
    lock = asyncio.Lock()
    sent, _ = await race(_send_output(websocket, terminal, offset, lock), _receive(websocket, terminal, lock))
    if sent is True:
        with contextlib.suppress(Exception):
            await websocket.close(WS_CLOSE_NORMAL, "the terminal exited")


def _offset(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


async def _send_output(
    websocket: WebSocket, terminal: RunningTerminal, offset: int, lock: asyncio.Lock
) -> bool:
    """Sends the output from ``offset``; ``True`` once the terminal's end was sent."""
    while (chunk := await terminal.next_chunk(offset, READ_LIMIT)) is not None:
        data, start = chunk
        async with lock:
            if start > offset:
                skipped = TerminalSkipped(requested=offset, offset=start)
                await websocket.send_text(skipped.model_dump_json())
            await websocket.send_bytes(data)
        offset = start + len(data)
    described = terminal.describe()
    async with lock:
        await websocket.send_text(TerminalExit(exit_code=described.exit_code, size=offset).model_dump_json())
    return True


async def _receive(websocket: WebSocket, terminal: RunningTerminal, lock: asyncio.Lock) -> None:
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            await terminal.write(data)
            continue
        text = message.get("text")
        if text is None:
            continue
        try:
            resize = TerminalResize.model_validate_json(text)
        except ValidationError as error:
            why = error.errors()[0]["msg"] if error.errors() else str(error)
            problem = TerminalError(message=f'expected {{"type": "resize", "cols": N, "rows": N}}: {why}')
            async with lock:
                await websocket.send_text(problem.model_dump_json())
            continue
        terminal.resize(resize.cols, resize.rows)
