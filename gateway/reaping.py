"""Idle reaping that several gateways of one installation can run at once without fighting.

Each gateway sees only the requests that pass through it, so its own view of
activity can only say "maybe idle". The agent sees every request of every
gateway (:mod:`sandbox_agent.activity`): before a conversation is reaped, its
agent is asked (``GET /activity``, a passive call that is no activity itself),
and one that served anyone within its idle timeout, or holds a connection
open, is kept (this gateway's view catches up with the agent's). Then the
runtime is asked whether the sandbox is still there and still RUNNING: one that
another gateway removed or paused meanwhile is taken as it is (one acts, the
others see the result). Two gateways reaping the same conversation at the same
moment both remove it (idempotent) and the agent records STOPPING once.
"""

from __future__ import annotations

import time

from gateway.agent_calls import agent_activity, has_unfinished_task
from gateway.errors import RuntimeFailure
from gateway.reconciling import GONE_ELSEWHERE, Reconciler
from gateway.records import Record
from gateway.runtimes.base import SandboxState
from sandbox_agent.protocol import ConversationStatus


class Reaper(Reconciler):
    async def reap(self) -> int:
        """Removes (or pauses, as their policy says) idle conversations, removes PAUSED ones
        past ``paused_ttl`` and forgets failed ones past their retention. Returns how many were reaped."""
        now = time.monotonic()
        reaped = 0
        for record in list(self._records.values()):
            if record.status is ConversationStatus.ERROR:
                if now - record.failed_at >= self._settings.error_retention:
                    self._forget(record)  # for good: a crashed sandbox still listed is not adopted again
                continue
            if self.pausing.expired(record, now):
                await self._stop(record, f"paused for {self._settings.paused_ttl:g}s (paused_ttl)")
                reaped += 1
                continue
            if not self._idle_here(record) or not await self._idle_everywhere(record):
                continue
            idle = f"idle for {record.idle_timeout:g}s: no request, connection or running task"
            if not await self.pausing.paused_when_idle(record, idle):
                await self._stop(record, idle)
                reaped += 1
        return reaped

    def _idle_here(self, record: Record) -> bool:
        """Idle as far as this gateway saw: READY, no connection, no request within its timeout."""
        if record.status is not ConversationStatus.READY or record.handle is None or record.connections:
            return False
        return time.monotonic() - record.last_active >= record.idle_timeout

    async def _idle_everywhere(self, record: Record) -> bool:
        """Idle for the agent too (every gateway's requests), with no unfinished task, and still
        RUNNING in the runtime; updates the record with what it learns otherwise."""
        assert record.handle is not None
        activity = await agent_activity(self._http, record.handle)
        if activity is not None and (activity.connections or activity.idle_seconds < record.idle_timeout):
            record.last_active = max(record.last_active, time.monotonic() - activity.idle_seconds)
            return False
        if await has_unfinished_task(self._http, record.handle):
            self.touch(record)
            return False
        if not self._idle_here(record):
            return False  # became active while we asked
        try:
            found = await self.runtime.find(record.id)
        except RuntimeFailure:
            return False  # the engine does not answer: try again next round
        if found is None:
            self._end_elsewhere(record, GONE_ELSEWHERE)  # another gateway reaped it first
            return False
        if found.state is SandboxState.PAUSED:  # another gateway paused it first
            self._paused_elsewhere(record, found)
            return False
        return found.state is SandboxState.RUNNING
