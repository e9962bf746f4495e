"""One conversation as the gateway holds it in memory, and the cursors that page through them.

A :class:`Record` is the runtime's metadata (the :class:`SandboxSpec`) plus what
only this gateway process knows: the status and start phase, the reason of a
failure, and this gateway's view of activity (last request, open connections).
Other gateways of the installation may hold records of the same conversation.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Literal
from uuid import UUID

from gateway.errors import InvalidInput
from gateway.models import Conversation, ConversationLimits, EgressPolicy
from gateway.runtimes.base import SandboxHandle, SandboxSpec
from sandbox_agent import paging
from sandbox_agent.protocol import ConversationStatus


@dataclass(eq=False)
class Record:
    #: What the runtime keeps as the sandbox's metadata (owner, title, limits, token, ...).
    spec: SandboxSpec
    status: ConversationStatus
    #: Seconds without a request or an open connection before the reaper ends it.
    idle_timeout: float
    #: While STARTING: the start-up step under way ("creating volume", ...).
    phase: str | None = None
    #: Why it failed (ERROR) or is stopping (STOPPING).
    reason: str | None = None
    #: Where its agent answers; set once READY.
    handle: SandboxHandle | None = None
    #: ``time.monotonic()`` of the last request; open ``connections`` keep it from idling.
    last_active: float = field(default_factory=time.monotonic)
    connections: int = 0
    #: ``time.monotonic()`` when it became READY (reconcile spares younger ones) and when it failed
    #: (an ERROR record is forgotten ``error_retention`` seconds later).
    ready_at: float = 0.0
    failed_at: float = 0.0
    #: The task starting its sandbox, while there is one (a delete cancels it).
    start_task: asyncio.Task[None] | None = None
    #: Set once it is stopped and forgotten: a second delete waits on it.
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    # --- lifecycle: pause and fork ---
    #: ``time.monotonic()`` when it was paused (or adopted PAUSED): it is removed ``paused_ttl`` later.
    paused_at: float = 0.0
    #: For a fork: the original's id and last seq, recorded as its first event after READY.
    forked_from: tuple[UUID, int] | None = None
    #: The pool: "warm" when a spare was claimed for it, else "cold" (started anew).
    start: Literal["warm", "cold"] = "cold"
    #: Over a limit after its start was registered (gateway.limits): being undone, counts for nobody.
    yielding: bool = False
    #: A warm create whose spare another gateway claimed first: the record its create goes on
    #: with, cold, under a new id (gateway.conversations); this one is dropped.
    successor: Record | None = None

    @property
    def id(self) -> UUID:
        return self.spec.conversation_id

    def view(self) -> Conversation:
        return Conversation(
            id=self.id,
            owner=self.spec.owner,
            title=self.spec.title,
            status=self.status,
            phase=self.phase,
            reason=self.reason,
            created_at=self.spec.created_at,
            idle_timeout=self.idle_timeout,
            internet=self.spec.internet,
            egress=None if self.spec.egress is None else EgressPolicy(allow=list(self.spec.egress)),
            limits=ConversationLimits(**asdict(self.spec.limits)),
            on_idle="pause" if self.spec.on_idle == "pause" else "delete",
            start=self.start,
            template=self.spec.template,
        )


def sort_key(record: Record) -> tuple[str, str]:
    """Conversations are listed oldest first (ties broken by id): a cursor names this key."""
    return (record.spec.created_at.isoformat(), str(record.id))


def cursor_of(record: Record) -> str:
    """The opaque ``page_id`` of the page after ``record`` (:mod:`sandbox_agent.paging`)."""
    return paging.encode(json.dumps(sort_key(record)))


def parse_cursor(page_id: str) -> tuple[str, str]:
    """The :func:`sort_key` a :func:`cursor_of` names; InvalidInput (422) for anything else."""
    try:
        created, ident = json.loads(paging.decode(page_id))
        return (str(created), str(ident))
    except (ValueError, TypeError):  # paging.BadCursor is a ValueError
        raise InvalidInput("page_id is not a cursor this gateway handed out") from None
