"""Events of one conversation: history (paged HTTP) and a live follow that resumes by itself.

:func:`follow_events` yields every stored event after ``after_seq`` exactly once and in
``seq`` order, over ``WS /conversation/{id}``. When the connection drops (network, gateway
restart, close 4008 "too slow", ...) it reconnects with ``after_seq`` set to the last seq it
yielded; anything the server replays again is dropped, and a gap (which the protocol never
produces, but a lossy path could) is filled from the HTTP history. Frames with seq 0 (status
frames from before the sandbox existed, Error frames) are passed through untracked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from uuid import UUID

from gateway.client._exceptions import GatewayUnavailable, error_for_close
from gateway.client._transport import Connection, parse_frame
from sandbox_agent.protocol import AFTER_SEQ_LIVE, WS_CLOSE_CONVERSATION_ENDED, Event

#: A connection that stayed up this long counts as having worked.
_STABLE_AFTER = 5.0


def history(
    conn: Connection,
    conversation_id: UUID,
    *,
    after_seq: int | None = None,
    types: Sequence[str] | None = None,
    task_id: UUID | None = None,
    limit: int = 100,
) -> AsyncGenerator[Event, None]:
    """Stored events in ``seq`` order (all pages), filtered like ``GET .../event``."""
    params = {
        "after_seq": after_seq,
        "type": list(types) if types else None,
        "task_id": str(task_id) if task_id else None,
        "limit": limit,
    }
    return conn.pages(f"/conversation/{conversation_id}/event", Event, params)


async def follow_events(
    conn: Connection,
    conversation_id: UUID,
    after_seq: int = 0,
    *,
    reconnect_for: float = 60.0,
    stop_when_ended: bool = True,
) -> AsyncGenerator[Event, None]:
    """Every event after ``after_seq`` (``-1``: live only), then live ones, forever.

    Ends when the conversation ends (close 4410) if ``stop_when_ended``, else raises
    :class:`ConversationEnded`. Raises :class:`NotFound`/:class:`Unauthorized`/:class:`Forbidden`
    when the server refuses, and :class:`GatewayUnavailable` after ``reconnect_for`` seconds of
    failing to reconnect.
    """
    last = after_seq
    path = f"/conversation/{conversation_id}"
    failing_since: float | None = None
    delay = 0.05
    while True:
        code: int | None = None
        reason = ""
        try:
            ws = await conn.connect_ws(path, {"after_seq": last})
        except GatewayUnavailable:
            ws = None
        if ws is not None:
            opened = time.monotonic()
            async with ws:
                async for frame in ws:
                    failing_since, delay = None, 0.05
                    event = parse_frame(Event, frame)
                    if event.seq == 0:
                        yield event
                        continue
                    if last != AFTER_SEQ_LIVE and event.seq <= last:
                        continue  # replayed after a reconnect: already yielded
                    if last != AFTER_SEQ_LIVE and event.seq > last + 1:
                        gap = history(conn, conversation_id, after_seq=last)
                        async with aclosing(gap) as missed:
                            async for missing in missed:
                                if missing.seq >= event.seq:
                                    break
                                yield missing
                                last = missing.seq
                    yield event
                    last = event.seq
            code, reason = ws.close_code, ws.close_reason
            if time.monotonic() - opened > _STABLE_AFTER:
                failing_since = None  # it worked for a while: a fresh drop, a fresh budget
        if code == WS_CLOSE_CONVERSATION_ENDED and stop_when_ended:
            return
        refused = error_for_close(code, reason, f"WS {path}")
        if refused is not None:
            raise refused
        # Anything else is a dropped connection: resume from `last`.
        now = time.monotonic()
        failing_since = failing_since or now
        if now - failing_since > reconnect_for:
            raise GatewayUnavailable(
                f"lost the event stream of conversation {conversation_id} and could not resume it"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
