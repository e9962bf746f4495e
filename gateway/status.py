"""The in-gateway pub/sub of conversation status changes.

The lifecycle manager publishes a :class:`StatusNotice` whenever a conversation
changes status (STARTING with each phase, READY, ERROR) and when it ends
(deleted, reaped, failed and removed). ``WS /conversation/``,
``WS /conversation/{id}`` and the firehose subscribe: they turn STARTING and
ERROR notices into seq-0 frames for their clients, open their upstream on
READY, and close on ``ended``.

READY itself is never sent as a gateway frame: the agent records READY as
seq 1 of its log, and followers get it from there, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sandbox_agent.protocol import ConversationStatus, ConversationStatusUpdate, Event


@dataclass(frozen=True)
class StatusNotice:
    conversation_id: UUID
    status: ConversationStatus
    phase: str | None = None
    reason: str | None = None
    #: READY after a start by this gateway (its log holds the READY event), as
    #: opposed to a sandbox adopted after a restart.
    fresh: bool = False
    #: The conversation is gone: its sandbox was removed.
    ended: bool = False
    #: READY after a resume: the seq just before the READY event it recorded (a follower
    #: that starts now reads from there, so it gets that event; see gateway.pausing).
    resumed_after: int | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def frame(self) -> str:
        """This notice as a seq-0 event envelope (JSON text)."""
        detail = ConversationStatusUpdate(
            status=self.status, conversation_id=self.conversation_id, phase=self.phase, reason=self.reason
        )
        event = Event(
            id=uuid4(), seq=0, conversation_id=self.conversation_id, created_at=self.at, detail=detail
        )
        return event.model_dump_json()


class StatusBus:
    """Fan-out of :class:`StatusNotice`. Queues are unbounded: notices are rare
    (a handful per conversation) and must never be dropped."""

    def __init__(self) -> None:
        self._subscribers: dict[int, tuple[UUID | None, asyncio.Queue[StatusNotice]]] = {}
        self._next = 0

    @contextlib.contextmanager
    def subscribe(self, conversation_id: UUID | None = None) -> Iterator[asyncio.Queue[StatusNotice]]:
        """Notices of one conversation, or of all when ``conversation_id`` is None,
        from now until the ``with`` block ends."""
        key = self._next
        self._next += 1
        queue: asyncio.Queue[StatusNotice] = asyncio.Queue()
        self._subscribers[key] = (conversation_id, queue)
        try:
            yield queue
        finally:
            del self._subscribers[key]

    def publish(self, notice: StatusNotice) -> None:
        for wanted, queue in list(self._subscribers.values()):
            if wanted is None or wanted == notice.conversation_id:
                queue.put_nowait(notice)
