"""``WS /ws?after_seq=N``: replay then live, and client frames.

Contract:
- The token is checked after the handshake; a missing or wrong one closes the
  socket with 4401.
- Events after ``after_seq`` (default 0: all history; -1: live only) are sent
  in seq order, history then live, with no gap and no duplicate (one
  :class:`~sandbox_agent.followers.Follower` reads both).
- A frame ``{"runnable": ..., "title": ...}`` creates a task; ``{"detail": ...}``
  triggers an event; ``{"stdin": "...", "task_id": ..., "eof": false}`` writes to
  the stdin of a task started with ``"stdin": true`` (``eof`` closes it); anything
  else (not JSON, nested too deeply: see :mod:`sandbox_agent.frames`) gets an ``Error`` envelope (seq 0, not
  stored) on this socket only, which stays open.
- A subscriber that falls ``subscriber_queue_size`` events or
  ``subscriber_lag_bytes`` bytes behind is closed with 4008
  (WS_CLOSE_TOO_SLOW); it resumes with ``after_seq``. Agent shutdown closes
  with 1001. A subscriber that does not read may never take the close frame:
  after :data:`CLOSE_TIMEOUT` seconds it is left to the server, which closes
  the connection once it reads or goes. What it holds meanwhile is one batch
  (about 1 MiB, see :class:`~sandbox_agent.followers.Follower`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from sandbox_agent.agent import Agent
from sandbox_agent.auth import websocket_authorized
from sandbox_agent.errors import AgentError, explain_validation, unwritable_detail
from sandbox_agent.events import LogClosed, UnencodableEvent, ephemeral
from sandbox_agent.followers import Follower, FollowerTooSlow
from sandbox_agent.frames import BadFrame, parse_frame
from sandbox_agent.journal import JournalUnwritable
from sandbox_agent.protocol import (
    AFTER_SEQ_LIVE,
    WS_CLOSE_BAD_QUERY,
    WS_CLOSE_GOING_AWAY,
    WS_CLOSE_TOO_SLOW,
    ErrorEvent,
    EventTrigger,
    StdinFrame,
    TaskCreate,
)
from sandbox_agent.race import finished, race
from sandbox_agent.routes.decl import Router

router = Router(tags=["events"])

_EXPECTED = (
    'expected {"runnable": {...}, "title": ...}, {"detail": {...}} or {"stdin": "...", "task_id": ...}'
)
#: Seconds a closing subscriber gets to take the close frame.
CLOSE_TIMEOUT = 10.0


@router.websocket("/ws")
async def follow(websocket: WebSocket) -> None:
    agent: Agent = websocket.app.state.agent
    await websocket.accept()
    if not await websocket_authorized(websocket):
        return
    try:
        after_seq = int(websocket.query_params.get("after_seq", "0"))
    except ValueError:
        after_seq = -2
    if after_seq < AFTER_SEQ_LIVE:
        await websocket.close(WS_CLOSE_BAD_QUERY, "after_seq must be an integer >= -1")
        return
    follower = agent.events.follow(after_seq)
    lock = asyncio.Lock()
    try:
        sent, _, overflowed = await race(
            _send_events(websocket, follower, lock),
            _receive_frames(websocket, agent, lock),
            follower.overflowed.wait(),
        )
    finally:
        follower.close()
    code: int | None = None
    if finished(overflowed) or isinstance(sent, FollowerTooSlow):
        code = WS_CLOSE_TOO_SLOW
    elif isinstance(sent, LogClosed):
        code = WS_CLOSE_GOING_AWAY
    if code is not None:
        with contextlib.suppress(Exception):  # the peer may be gone already, or not reading
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await websocket.close(
                    code, "too slow: resume with after_seq" if code == WS_CLOSE_TOO_SLOW else ""
                )


async def _send_events(websocket: WebSocket, follower: Follower, lock: asyncio.Lock) -> None:
    while True:
        batch = await follower.next_batch()
        async with lock:
            for raw in batch:
                await websocket.send_text(raw.decode())


async def _receive_frames(websocket: WebSocket, agent: Agent, lock: asyncio.Lock) -> None:
    limit = agent.settings.max_event_bytes
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None and message.get("bytes") is not None:
            text = message["bytes"].decode("utf-8", errors="replace")
        if text is None:
            continue
        if len(text) > limit:
            problem: ErrorEvent | None = ErrorEvent(message=f"frame larger than {limit} bytes")
        else:
            problem = await _handle_frame(text, agent)
        if problem is not None:
            async with lock:
                await websocket.send_text(ephemeral(agent.conversation_id, problem).decode())


async def _handle_frame(text: str, agent: Agent) -> ErrorEvent | None:
    """Act on one client frame; returns the error to send back, if any."""
    try:
        frame: Any = parse_frame(text)
    except BadFrame as error:
        return ErrorEvent(message=str(error))
    if not isinstance(frame, dict) or not ({"runnable", "detail", "stdin", "eof"} & frame.keys()):
        return ErrorEvent(message=_EXPECTED)
    try:
        if "runnable" in frame:
            await agent.tasks.create(TaskCreate.model_validate(frame))
        elif "stdin" in frame or "eof" in frame:
            write = StdinFrame.model_validate(frame)
            pipe = agent.tasks.stdin(write.task_id)
            await pipe.write(write.stdin.encode(errors="replace"), eof=write.eof)
        else:
            agent.events.append(EventTrigger.model_validate(frame).detail)
    except ValidationError as error:
        return ErrorEvent(message="invalid frame", errors=explain_validation(list(error.errors())))
    except AgentError as error:
        return ErrorEvent(message=error.detail)
    except UnencodableEvent as error:
        return ErrorEvent(message=str(error))
    except JournalUnwritable as error:
        return ErrorEvent(message=unwritable_detail(error))
    return None
