"""Pausing and resuming conversations: READY <-> PAUSED, on request, when idle, on the way out.

Contracts:
- :meth:`Pauser.pause` records PAUSED in the sandbox's own log (``POST /status``,
  so followers and the firehose see it in order), then freezes the sandbox
  (:meth:`Runtime.pause`), then sets the record PAUSED and publishes it on the
  :class:`StatusBus`. Only a READY conversation can be paused (409 otherwise);
  pausing a PAUSED one does nothing. A runtime that cannot pause (``pauses``
  False) is refused before anything is recorded (409); a freeze that fails
  records READY with a ``reason`` saying it was not paused.
- :meth:`Pauser.resume` thaws the sandbox, records READY in its log, sets the
  record READY (activity: now) and publishes it. Resuming one that is not
  PAUSED does nothing. :meth:`ConversationManager.ready_handle` calls it, so
  every request and WebSocket to a PAUSED conversation resumes it first.
- Pause and resume of one conversation never interleave (a lock per id).
- A PAUSED conversation counts against the limits, is not active (its idle
  time does not matter any more), and is removed ``paused_ttl`` seconds after
  it was paused (after a restart: after it was adopted).
- A runtime that fails to pause or resume: :class:`UpstreamUnreachable` (502)
  saying why (:class:`RuntimeUnavailable`, 503, when the engine does not answer);
  the record keeps the status it had.
- Paused through another gateway: this one holds the record READY until its next
  sync (``sync_interval``), and a frozen agent still accepts connections but
  answers nothing, so a request sent meanwhile would wait for its timeout (504
  after ``proxy_timeout``, a WebSocket's 4502). Every wait on an agent (a proxied
  request until its answer's head, a WebSocket's handshake) is
  :meth:`Pauser.watching`: past :data:`FROZEN_AFTER` seconds, one
  :meth:`Runtime.find`; PAUSED there, the record takes it over (PAUSED) and
  resumes it. The request is not sent again: the thawed agent answers the one
  that waited (its effect may come before the READY event the resume records).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from uuid import UUID

import httpx

from gateway.agent_calls import announce_status
from gateway.errors import (
    GatewayError,
    LifecycleUnsupported,
    NotReady,
    RuntimeFailure,
    RuntimeUnavailable,
    UpstreamUnreachable,
)
from gateway.records import Record
from gateway.runtimes.base import Runtime, SandboxState
from gateway.settings import Settings
from gateway.status import StatusBus, StatusNotice
from sandbox_agent.protocol import ConversationStatus

log = logging.getLogger("convoy.gateway")

#: Seconds a wait on an agent lasts before the runtime is asked whether it was paused through
#: another gateway (an agent answers the requests it can within milliseconds).
FROZEN_AFTER = 1.0


class Pauser:
    def __init__(self, settings: Settings, runtime: Runtime, bus: StatusBus, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._runtime = runtime
        self._bus = bus
        self._http = http
        self._locks: dict[UUID, asyncio.Lock] = {}
        self._looks: set[asyncio.Task[bool]] = set()

    def _lock(self, record: Record) -> asyncio.Lock:
        return self._locks.setdefault(record.id, asyncio.Lock())

    def busy(self, conversation_id: UUID) -> bool:
        """A pause or resume of it is under way here (what a listing says may be stale)."""
        lock = self._locks.get(conversation_id)
        return lock is not None and lock.locked()

    def forget(self, conversation_id: UUID) -> None:
        self._locks.pop(conversation_id, None)

    async def pause(self, record: Record) -> None:
        async with self._lock(record):
            if record.status is ConversationStatus.PAUSED:
                return
            if record.status is not ConversationStatus.READY or record.handle is None:
                raise NotReady(f"conversation {record.id} is {record.status.value}: only READY can be paused")
            if not getattr(self._runtime, "pauses", True):
                raise LifecycleUnsupported(f"the {self._runtime.name} runtime cannot pause a sandbox")
            handle = record.handle
            await announce_status(self._http, handle, ConversationStatus.PAUSED.value)
            try:
                record.handle = await self._runtime.pause(record.id)
            except RuntimeFailure as error:
                # It runs on, and its followers learn that the PAUSED just recorded did not happen.
                why = f"not paused: {error}"
                await announce_status(self._http, handle, ConversationStatus.READY.value, why)
                raise _unreachable(record, "paused", error) from None
            record.status, record.paused_at = ConversationStatus.PAUSED, time.monotonic()
            self._bus.publish(StatusNotice(record.id, ConversationStatus.PAUSED))

    async def resume(self, record: Record) -> None:
        async with self._lock(record):
            if record.status is ConversationStatus.PAUSED:
                await self._resume(record)

    async def _resume(self, record: Record) -> None:
        try:
            record.handle = await self._runtime.resume(record.id)
        except RuntimeFailure as error:
            raise _unreachable(record, "resumed", error) from None
        seq = await announce_status(self._http, record.handle, ConversationStatus.READY.value)
        record.status = ConversationStatus.READY
        record.last_active = time.monotonic()
        after = None if seq is None else seq - 1
        self._bus.publish(StatusNotice(record.id, ConversationStatus.READY, resumed_after=after))

    @contextlib.contextmanager
    def watching(self, record: Record) -> Iterator[None]:
        """Around a wait on ``record``'s agent: past :data:`FROZEN_AFTER` seconds, one look at
        the runtime in the background (:meth:`resume_if_paused_elsewhere`; see the module
        docstring). A timer, not a task: the common request ends long before it fires."""
        timer = asyncio.get_running_loop().call_later(FROZEN_AFTER, self._look, record)
        try:
            yield
        finally:
            timer.cancel()

    def _look(self, record: Record) -> None:
        task = asyncio.create_task(self.resume_if_paused_elsewhere(record), name=f"look at {record.id}")
        self._looks.add(task)
        task.add_done_callback(self._looks.discard)

    async def resume_if_paused_elsewhere(self, record: Record) -> bool:
        """Resumes ``record`` when this gateway holds it READY but the runtime says PAUSED
        (paused through another gateway since the last sync); whether it did. Never raises:
        a failure is logged, and the waiting request ends as it would have."""
        async with self._lock(record):
            if record.status is not ConversationStatus.READY:
                return False
            try:
                found = await self._runtime.find(record.id)
            except RuntimeFailure:
                return False
            if found is None or found.state is not SandboxState.PAUSED:
                return False
            log.info("conversation %s was paused through another gateway: resumed for a request", record.id)
            record.handle, record.status = found, ConversationStatus.PAUSED
            record.paused_at = time.monotonic()
            self._bus.publish(StatusNotice(record.id, ConversationStatus.PAUSED))
            try:
                await self._resume(record)
            except GatewayError as error:
                log.warning("resuming conversation %s failed: %s", record.id, error)
            return True

    async def thaw_quietly(self, record: Record) -> None:
        """Resume a PAUSED one on its way out (so it records STOPPING and stops gracefully)."""
        with contextlib.suppress(GatewayError):
            await self.resume(record)

    async def paused_when_idle(self, record: Record, why: str) -> bool:
        """Pause an idle conversation whose policy says so; ``False`` when it is to be removed
        (its policy is "delete", or its runtime cannot pause: :class:`LifecycleUnsupported`)."""
        if record.spec.on_idle != "pause":
            return False
        try:
            await self.pause(record)
        except LifecycleUnsupported as error:  # a runtime that never pauses (pauses False) reaps it
            log.info("idle conversation %s removed, not paused: %s", record.id, error)
            return False
        except GatewayError as error:
            log.warning("pausing idle conversation %s failed (tried again): %s", record.id, error)
        else:
            log.info("conversation %s paused: %s", record.id, why)
        return True

    def expired(self, record: Record, now: float) -> bool:
        """A PAUSED conversation kept for ``paused_ttl`` already."""
        return (
            record.status is ConversationStatus.PAUSED and now - record.paused_at >= self._settings.paused_ttl
        )


def _unreachable(record: Record, done: str, error: RuntimeFailure) -> GatewayError:
    if isinstance(error, RuntimeUnavailable | LifecycleUnsupported):
        return error
    return UpstreamUnreachable(f"conversation {record.id} could not be {done}: {error}")
