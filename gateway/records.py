"""One conversation as the gateway holds it in memory, and the cursors that page through them.

A :class:`Record` is the runtime's metadata (the :class:`SandboxSpec`) plus what
only this gateway process knows: the status and start phase, the reason of a
failure, and activity (last request, open connections) for idle reaping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from dataclasses import asdict, dataclass, field
from uuid import UUID

from gateway.errors import InvalidInput
from gateway.models import Conversation, ConversationLimits, EgressPolicy
from gateway.runtimes.base import SandboxHandle, SandboxSpec
from sandbox_agent.protocol import ConversationStatus


@dataclass(eq=False)
class Record:
    spec: SandboxSpec
    status: ConversationStatus
    idle_timeout: float
    phase: str | None = None
    reason: str | None = None
    handle: SandboxHandle | None = None
    last_active: float = field(default_factory=time.monotonic)
    connections: int = 0
    ready_at: float = 0.0
    failed_at: float = 0.0
    start_task: asyncio.Task[None] | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)

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
        )


def cursor_of(record: Record) -> str:
    raw = json.dumps([record.spec.created_at.isoformat(), str(record.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def sort_key(record: Record) -> tuple[str, str]:
    return (record.spec.created_at.isoformat(), str(record.id))


def parse_cursor(page_id: str) -> tuple[str, str]:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(page_id + "=" * (-len(page_id) % 4)))
        return (str(created), str(ident))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput("page_id is not a cursor this gateway handed out") from None
