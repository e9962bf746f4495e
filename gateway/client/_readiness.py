"""Waiting for a conversation's sandbox to be READY: followed while it starts, then polled.

A STARTING conversation is followed over ``WS /conversation/{id}``, so READY (or ERROR) is
seen when it happens; where no WebSocket can be opened (a replaced ``transport``), or the
socket ends first, the conversation is polled with a growing delay (at most 0.5 s). Every
state seen is written to the handle's ``info`` as it comes, so the handle says what the
gateway last said even when the wait raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

from gateway.client._exceptions import ConvoyError, GatewayUnavailable, SandboxFailed
from gateway.client._transport import Connection, parse_frame
from gateway.models import Conversation, ConversationStatus
from sandbox_agent.protocol import ConversationStatusUpdate, Event


class Watched(Protocol):
    """What is waited on: a conversation handle, its ``info`` kept current."""

    info: Conversation

    async def refresh(self) -> Conversation: ...


async def wait_ready(
    conn: Connection,
    convo: Watched,
    timeout: float,  # noqa: ASYNC109 - also the blocking client's; checked against a deadline
    on_status: Callable[[Conversation], None] | None,
) -> Conversation:
    """``convo``'s state once READY or PAUSED. Raises :class:`SandboxFailed` with the reason on
    ERROR (or STOPPING), :class:`GatewayUnavailable` after ``timeout`` seconds; ``on_status``
    sees every state seen."""
    deadline = time.monotonic() + timeout
    if convo.info.status is ConversationStatus.STARTING:
        await _follow_start(conn, convo, deadline, on_status)
    delay = 0.05
    while True:
        info = convo.info if convo.info.status is not ConversationStatus.STARTING else await convo.refresh()
        if on_status is not None:
            on_status(info)
        if info.status in (ConversationStatus.READY, ConversationStatus.PAUSED):
            return info
        if info.status in (ConversationStatus.ERROR, ConversationStatus.STOPPING):
            why = info.reason or "no reason given"
            raise SandboxFailed(f"conversation {info.id} failed to start: {why}", reason=info.reason)
        if time.monotonic() > deadline:
            raise GatewayUnavailable(f"conversation {info.id} was not ready after {timeout:g}s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


async def _follow_start(
    conn: Connection, convo: Watched, deadline: float, on_status: Callable[[Conversation], None] | None
) -> None:
    """Follow ``WS /conversation/{id}`` until the conversation leaves STARTING (``convo.info``
    then says how) or the socket ends or the deadline passes (``convo.info`` is left STARTING:
    the caller polls). STARTING phases are shown to ``on_status`` as they come."""
    try:
        ws = await conn.connect_ws(f"/conversation/{convo.info.id}", {"after_seq": 0})
    except (GatewayUnavailable, ConvoyError):
        return
    async with ws:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.monotonic()):
                async for frame in ws:
                    detail = parse_frame(Event, frame).detail
                    if not isinstance(detail, ConversationStatusUpdate):
                        continue
                    convo.info = convo.info.model_copy(
                        update={"status": detail.status, "phase": detail.phase, "reason": detail.reason}
                    )
                    if detail.status is not ConversationStatus.STARTING:
                        return
                    if on_status is not None:
                        on_status(convo.info)
