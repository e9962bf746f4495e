"""What a gateway holds of the conversations in memory: records, queries, activity, endings.

The gateway keeps no database: a :class:`Record` per conversation lives in the
memory of each gateway process, rebuilt from the runtime (:meth:`Runtime.list`,
:meth:`Runtime.find`) by :mod:`gateway.reconciling`. Any number of gateways may
hold a record of the same conversation; the runtime's metadata and the sandbox's
own event log are the truth they share. What a record knows beyond them is
transient: the start phase, the error of a failed start (kept ``error_retention``
seconds), and this gateway's view of activity (the agent's own count decides:
see :mod:`gateway.reaping`).

Contracts of this layer:
- :meth:`ConversationCore._stop` records STOPPING with the reason in the sandbox's
  own log (``POST /status``; the agent records it once, however many gateways
  stop it), so followers see why, then removes the sandbox (idempotent); afterwards
  the id is unknown (404) here, and in every other gateway once it sees it gone.
- :meth:`ConversationCore._end_elsewhere`: a conversation ended by another gateway
  (or by hand) is forgotten cleanly: its followers are told (STOPPING, ended) and
  the id is 404, never a 500. An ERROR one is never "ended elsewhere": it stays
  visible, with its reason, until deleted or reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Iterable, Iterator
from uuid import UUID

import httpx

from gateway.admission import Admission
from gateway.agent_calls import announce_stopping
from gateway.errors import NotReady, RuntimeFailure, StillStarting, public_reason
from gateway.models import Conversation
from gateway.pausing import Pauser
from gateway.pool import Pool
from gateway.records import Record, cursor_of, parse_cursor, sort_key
from gateway.runtimes.base import Runtime, SandboxHandle
from gateway.settings import Settings
from gateway.status import StatusBus, StatusNotice
from sandbox_agent.protocol import ConversationStatus, Page

log = logging.getLogger("convoy.gateway")

#: How much longer than a start may take a request waits for a STARTING conversation.
START_WAIT_MARGIN = 5.0
#: Statuses of a conversation whose sandbox runs (what reconciliation holds to account).
RUNNING = (ConversationStatus.READY, ConversationStatus.PAUSED)
#: Statuses that count against the limits.
LIVE = (ConversationStatus.STARTING, ConversationStatus.STOPPING, *RUNNING)


class ConversationCore:
    def __init__(self, settings: Settings, runtime: Runtime, bus: StatusBus, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self.runtime = runtime
        self._bus = bus
        self._http = http
        self._records: dict[UUID, Record] = {}
        #: Ids this gateway saw removed (monotonic time): never adopted or looked up again.
        self._removed_at: dict[UUID, float] = {}
        self._admission = Admission(settings)
        state_dir = settings.state_dir
        self._state_dirs = tuple(sorted({str(state_dir), str(state_dir.absolute())}, key=len, reverse=True))
        self.closing = False
        self.pausing = Pauser(settings, runtime, bus, http)
        #: Ready spare sandboxes (gateway/pool.py); started by the app after the first reconcile.
        self.pool = Pool(settings, runtime, http)

    # --- queries ----------------------------------------------------------------

    def lookup(self, conversation_id: UUID) -> Record | None:
        """The record this gateway holds, without asking the runtime."""
        return self._records.get(conversation_id)

    async def ready_handle(self, record: Record) -> SandboxHandle:
        """The sandbox of a READY conversation. A STARTING one is waited for (at most the
        start timeout and a little), so a request sent right after the create is served
        rather than refused. Raises :class:`NotReady` (409) for ERROR and STOPPING, and
        :class:`StillStarting` (503) when the wait ran out. A PAUSED one is resumed first."""
        if record.status is ConversationStatus.PAUSED:
            await self.pausing.resume(record)
        if record.status is ConversationStatus.STARTING:
            with self._bus.subscribe(record.id) as notices:
                try:
                    async with asyncio.timeout(self._settings.start_timeout + START_WAIT_MARGIN):
                        # Checked after subscribing: a change between the two is not missed.
                        while record.status is ConversationStatus.STARTING:
                            await notices.get()
                except TimeoutError:
                    raise StillStarting(f"conversation {record.id} is still STARTING") from None
        if record.status is not ConversationStatus.READY or record.handle is None:
            reason = f" ({record.reason})" if record.reason else ""
            raise NotReady(f"conversation {record.id} is {record.status.value}{reason}, not READY")
        return record.handle

    def ready_records(self) -> list[Record]:
        return [r for r in self._records.values() if r.status is ConversationStatus.READY and r.handle]

    def page(self, page_id: str | None, limit: int) -> Page[Conversation]:
        records: Iterable[Record] = self._records.values()
        if page_id:
            after = parse_cursor(page_id)
            records = (r for r in records if sort_key(r) > after)
        # The page's records and one more (is there a next page?), not a sort of every record.
        first = heapq.nsmallest(limit + 1, records, key=sort_key)
        chunk, more = first[:limit], len(first) > limit
        return Page[Conversation](
            results=[r.view() for r in chunk], next_page_id=cursor_of(chunk[-1]) if more and chunk else None
        )

    def count(self) -> int:
        return len(self._records)

    # --- activity (this gateway's view; the agent's count is what the reaper trusts) ---

    @staticmethod
    def touch(record: Record) -> None:
        record.last_active = time.monotonic()

    @contextlib.contextmanager
    def connection(self, record: Record) -> Iterator[None]:
        """Counts an open client connection: a conversation with one is never idle."""
        record.connections += 1
        self.touch(record)
        try:
            yield
        finally:
            record.connections -= 1
            self.touch(record)

    # --- transitions ------------------------------------------------------------

    def _ready(self, record: Record, handle: SandboxHandle, fresh: bool = True) -> None:
        """READY; ``fresh``: its log's READY event is news (followers read it from seq 1)."""
        record.handle, record.status, record.phase = handle, ConversationStatus.READY, None
        record.ready_at = time.monotonic()
        self.touch(record)
        self._bus.publish(StatusNotice(record.id, ConversationStatus.READY, fresh=fresh))

    def _fail(self, record: Record, reason: str, failed_start: bool = False) -> None:
        log.warning("conversation %s failed: %s", record.id, reason)
        if failed_start:
            self._admission.failed(record.spec.owner)
        reason = public_reason(reason, self._state_dirs)
        record.status, record.reason, record.phase, record.handle = (
            ConversationStatus.ERROR,
            reason,
            None,
            None,
        )
        record.failed_at = time.monotonic()
        self._bus.publish(StatusNotice(record.id, ConversationStatus.ERROR, reason=reason, ended=True))

    def _paused_elsewhere(self, record: Record, handle: SandboxHandle) -> None:
        """Another gateway paused it (the runtime says PAUSED): so it is here too."""
        record.handle, record.status = handle, ConversationStatus.PAUSED
        record.paused_at = time.monotonic()
        self._bus.publish(StatusNotice(record.id, ConversationStatus.PAUSED))

    def _forget(self, record: Record) -> bool:
        """Drops ``record`` for good (``False``: it was no longer the record of its id)."""
        if self._records.get(record.id) is not record:
            return False
        self._records.pop(record.id, None)
        self.pausing.forget(record.id)
        self._removed_at[record.id] = time.monotonic()
        record.gone.set()
        return True

    def _end_elsewhere(self, record: Record, reason: str) -> None:
        """The sandbox was removed behind this gateway (by another gateway of the installation,
        or by hand): forget it, and tell its followers it ended. A STOPPING record is left to
        :meth:`_stop`, an ERROR one stays (with its reason) until deleted or reaped."""
        if record.status in (ConversationStatus.STOPPING, ConversationStatus.ERROR):
            return  # being stopped here (_stop tells), or failed: its sandbox is meant to be gone
        if not self._forget(record):
            return
        log.info("conversation %s ended elsewhere: %s", record.id, reason)
        record.status, record.reason, record.phase = ConversationStatus.STOPPING, reason, None
        self._bus.publish(StatusNotice(record.id, ConversationStatus.STOPPING, reason=reason, ended=True))

    async def _stop(self, record: Record, reason: str) -> None:
        """Record STOPPING (in the sandbox's log when it answers), remove the sandbox, forget the id."""
        if record.status is ConversationStatus.STOPPING:
            await record.gone.wait()
            return
        await self.pausing.thaw_quietly(record)  # a PAUSED one records STOPPING and stops gracefully
        was_ready = record.status is ConversationStatus.READY and record.handle is not None
        record.status, record.reason, record.phase = ConversationStatus.STOPPING, reason, None
        if record.start_task is not None and not record.start_task.done():
            record.start_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await record.start_task
        if was_ready and record.handle is not None:
            await announce_stopping(self._http, record.handle, reason)
        try:
            await self.runtime.remove(record.id)  # idempotent: another gateway may be removing it too
        except RuntimeFailure as error:
            log.warning("removing the sandbox of %s failed (reconcile retries): %s", record.id, error)
        self._forget(record)
        self._removed_at[record.id] = time.monotonic()
        record.gone.set()
        self._bus.publish(StatusNotice(record.id, ConversationStatus.STOPPING, reason=reason, ended=True))

    async def close(self) -> None:
        """Stops accepting conversations, cancels starts in progress (their
        half-started sandboxes are removed by the runtime) and removes the pool's spares."""
        self.closing = True
        tasks = [r.start_task for r in self._records.values() if r.start_task and not r.start_task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pool.close()  # spares are removed; conversations keep running
