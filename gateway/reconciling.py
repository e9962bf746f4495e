"""Keeping a gateway's records in line with the runtime, which every gateway of the installation shares.

What a gateway learns of what the others did, and how, all above the Runtime seam:

- :meth:`Reconciler.get`: a request for an id this gateway holds no record of
  asks the runtime (:meth:`Runtime.find`) before answering 404, so a
  conversation created through another gateway a moment ago is served at once
  (ownership from the runtime's spec). One STARTING elsewhere is watched until
  its sandbox runs (:meth:`Reconciler._watch_start`).
- :meth:`Reconciler.sync`, every ``sync_interval`` seconds (2 by default): one
  :meth:`Runtime.list`. New conversations are adopted (and so appear on the
  firehose within ``sync_interval`` plus one listing: followed from their first
  event), pauses and resumes made elsewhere are taken over, an exited sandbox
  is removed (idempotent) and its conversation fails with the runtime's reason,
  and one whose sandbox is gone ends cleanly: its followers see the end
  (STOPPING) and the id is 404 here too. One round at a time: the sync and the
  reconcile loops overlap, and a second round that saw the EXITED sandbox the
  first one removes would take the removal for a delete elsewhere.
- An ERROR conversation stays ERROR with its reason until deleted or reaped
  (``error_retention``): nothing here turns it into "gone elsewhere". A sandbox
  the runtime says crashed (:func:`crashed`: killed for memory, or a failing exit
  code; no removal looks like that) fails at once and is left EXITED for the
  next reconcile's clean-up, so every gateway's listing (every ``sync_interval``,
  shorter than ``reconcile_interval`` by default) sees the crash and fails its
  record too. Any other EXITED sandbox is looked at again a moment later: a
  removal by another gateway passes through EXITED, so one gone by then was
  deleted elsewhere; one still there is removed and its conversation fails.
- :meth:`Reconciler.reconcile`, every ``reconcile_interval`` (and at start):
  :meth:`sync`, then the pool's spares and :meth:`Runtime.cleanup_orphans`,
  whose min-age guards leave every gateway's start in progress alone; one round
  with the sync's, never beside one.
- A request that waits on an agent for a second looks at the runtime
  (:meth:`gateway.pausing.Pauser.watching`): a conversation paused through
  another gateway since the last sync is resumed, and the request answered.
  A spare claimed through another gateway first shows in the claim itself
  (:class:`SpareTaken`: see :mod:`gateway.conversations`).

Conversations this gateway is starting or stopping itself are left to those
tasks; a listing that raises (:class:`RuntimeUnavailable`) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from uuid import UUID

import httpx

from gateway.auth import Principal, can_access
from gateway.conversation_core import RUNNING, START_WAIT_MARGIN, ConversationCore
from gateway.errors import NotFound, RuntimeFailure
from gateway.records import Record
from gateway.runtimes.base import SandboxHandle, SandboxState
from gateway.status import StatusNotice
from sandbox_agent.protocol import ConversationStatus

log = logging.getLogger("convoy.gateway")

#: What is adopted without a record (STARTING: a start under way here or elsewhere, watched).
_ADOPTABLE = (SandboxState.RUNNING, SandboxState.PAUSED)
#: Seconds between two looks at a start under way in another gateway.
_WATCH_INTERVAL = 0.1
#: Seconds an EXITED sandbox is given to vanish (removed by another gateway) before it fails.
_REMOVAL_SETTLE = 1.5
#: Listed conversations a sync round applies between two turns of the event loop: a listing of
#: hundreds is applied in slices, so requests are served in between (not after the whole round).
_SLICE = 100
#: Why a conversation ended behind this gateway's back.
GONE_ELSEWHERE = "the sandbox was removed outside this gateway (by another gateway, or by hand)"


#: Exit codes of a sandbox stopped on purpose: a clean exit, SIGKILL (a removal), SIGTERM (a stop).
_STOPPED_CODES = (None, 0, 128 + 9, 128 + 15)


def crashed(handle: SandboxHandle) -> bool:
    """Whether an EXITED ``handle`` ended by itself rather than by a removal (which kills it):
    the kernel killed it for memory, or it exited with a failing code."""
    return handle.oom_killed or handle.exit_code not in _STOPPED_CODES


class Reconciler(ConversationCore):
    #: Set after the first reconcile: what is adopted later is news (followed from its first event).
    _synced = False
    #: Held by a :meth:`sync` round (created on the first, in the loop that runs it).
    _sync_lock: asyncio.Lock | None = None

    # --- queries that ask the runtime ---------------------------------------------

    async def get(self, conversation_id: UUID, principal: Principal) -> Record:
        """The caller's conversation: this gateway's record, or the runtime's (another gateway
        created it). Another owner's is :class:`NotFound`, exactly like an unknown id."""
        record = self._records.get(conversation_id) or await self.discover(conversation_id)
        if record is None or not can_access(principal, record.spec.owner):
            raise NotFound(f"conversation {conversation_id} not found")
        return record

    async def discover(self, conversation_id: UUID) -> Record | None:
        """A record for a conversation this gateway does not know, from :meth:`Runtime.find`
        (``None``: absent, a spare, removed, or exited)."""
        if conversation_id in self._removed_at or self.closing:
            return None
        handle = await self.runtime.find(conversation_id)
        known = self._records.get(conversation_id)  # found meanwhile, by another request or sync
        if known is not None or handle is None or handle.spec.pool is not None:
            return known
        if handle.state is SandboxState.PAUSED:
            return self._adopt(handle, fresh=self._synced)
        if handle.state in (SandboxState.STARTING, SandboxState.RUNNING):
            return self._watch_start(handle)  # READY once its agent answers
        if crashed(handle):
            return self._adopt_failed(handle)  # another gateway holds it ERROR: so does this one
        return None  # EXITED: sync removes it

    async def gone_elsewhere(self, record: Record) -> bool:
        """Whether ``record``'s sandbox is gone (after a request to it failed): then it is
        forgotten (:meth:`_end_elsewhere`) and the caller answers 404."""
        try:
            found = await self.runtime.find(record.id)
        except RuntimeFailure:
            return False
        if found is not None or record.status not in RUNNING:
            return False
        self._end_elsewhere(record, GONE_ELSEWHERE)
        return True

    # --- adoption -----------------------------------------------------------------

    def _adopt(self, handle: SandboxHandle, fresh: bool = False) -> Record:
        idle = handle.spec.idle_timeout or self._settings.idle_timeout
        paused = handle.state is SandboxState.PAUSED
        status = ConversationStatus.PAUSED if paused else ConversationStatus.READY
        record = Record(spec=handle.spec, status=status, idle_timeout=idle, handle=handle)
        record.ready_at = record.paused_at = time.monotonic()
        self._records[record.id] = record
        log.info("adopted conversation %s of %s (%s)", record.id, record.spec.owner, status.value)
        self._bus.publish(StatusNotice(record.id, status, fresh=fresh and not paused))
        return record

    def _adopt_failed(self, handle: SandboxHandle) -> Record:
        """An ERROR record for a crashed sandbox this gateway held no record of (its reason the
        runtime's), kept ``error_retention`` seconds like any failure."""
        idle = handle.spec.idle_timeout or self._settings.idle_timeout
        record = Record(spec=handle.spec, status=ConversationStatus.STARTING, idle_timeout=idle)
        self._records[record.id] = record
        self._fail(record, handle.reason or "the sandbox exited unexpectedly")
        return record

    def _watch_start(self, handle: SandboxHandle) -> Record:
        """A STARTING record for a start under way in another gateway (or just done), READY once
        its sandbox runs and its agent answers ``/ready`` (a runtime may say RUNNING before:
        Docker does from ``docker start`` on); looked at every 0.1 s, at most a start timeout."""
        idle = handle.spec.idle_timeout or self._settings.idle_timeout
        phase = "starting (through another gateway)"
        record = Record(spec=handle.spec, status=ConversationStatus.STARTING, idle_timeout=idle, phase=phase)
        self._records[record.id] = record
        self._bus.publish(StatusNotice(record.id, ConversationStatus.STARTING, phase=phase))
        record.start_task = asyncio.create_task(self._until_started(record), name=f"watch {record.id}")
        return record

    async def _until_started(self, record: Record) -> None:
        deadline = time.monotonic() + self._settings.start_timeout + START_WAIT_MARGIN
        found: SandboxHandle | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeFailure):  # the first look at once: it may be READY
                found = await self.runtime.find(record.id)
                if found is None or found.state not in (SandboxState.STARTING, SandboxState.RUNNING):
                    break
                if found.state is SandboxState.RUNNING and await self._answers(found):
                    break
            await asyncio.sleep(_WATCH_INTERVAL)
        if self._records.get(record.id) is not record or record.status is not ConversationStatus.STARTING:
            return
        if found is not None and found.state is SandboxState.RUNNING:
            self._ready(record, found)  # its READY event is news: followers read it from seq 1
        elif found is not None and found.state is SandboxState.PAUSED:
            self._paused_elsewhere(record, found)
        else:  # its start failed (that gateway holds the ERROR), or it was deleted meanwhile
            reason = (found.reason if found is not None else None) or "its start did not complete"
            self._fail(record, reason)
            self._forget(record)

    async def _answers(self, handle: SandboxHandle) -> bool:
        if not handle.base_url:
            return False  # not reachable yet (Docker: the relay's port is not published yet)
        try:
            return (await self._http.get(f"{handle.base_url}/ready", timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _exited_or_removed(self, handle: SandboxHandle) -> SandboxHandle | None:
        """An EXITED sandbox, looked at again a moment later: a removal by another gateway passes
        through EXITED (Docker: killed, then removed; its relay removed first), and then it is
        absent (``None``: it ended cleanly, no failure)."""
        await asyncio.sleep(_REMOVAL_SETTLE)
        try:
            return await self.runtime.find(handle.conversation_id)
        except RuntimeFailure:
            return handle

    # --- the loops ------------------------------------------------------------------

    async def sync(self) -> list[SandboxHandle]:
        """One listing applied to the records (see the module docstring), one round at a time;
        returns it."""
        async with self._round():
            return await self._sync_once()

    def _round(self) -> asyncio.Lock:
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        return self._sync_lock

    async def _sync_once(self) -> list[SandboxHandle]:
        began = time.monotonic()
        listed = await self.runtime.list()
        handles = {handle.conversation_id: handle for handle in listed if handle.spec.pool is None}
        # A spare a listing still shows as a spare (claimed a moment ago) is no vanished conversation.
        spare_ids = {handle.conversation_id for handle in listed if handle.spec.pool is not None}
        self._removed_at = {key: at for key, at in self._removed_at.items() if began - at < 600}
        for index, (conversation_id, handle) in enumerate(handles.items()):
            if index % _SLICE == _SLICE - 1:
                await asyncio.sleep(0)
            self.pool.discard(conversation_id)  # claimed through another gateway: no spare any more
            if conversation_id not in self._removed_at:
                await self._apply(handle)
        for record in [r for r in self._records.values() if r.status in RUNNING and r.handle]:
            if record.id not in handles and record.id not in spare_ids and record.ready_at < began:
                self._end_elsewhere(record, GONE_ELSEWHERE)
        self._synced = True
        return listed

    async def _apply(self, handle: SandboxHandle) -> None:
        record = self._records.get(handle.conversation_id)
        if record is None:
            if self.closing:
                return
            if handle.state in _ADOPTABLE and not self._synced:
                self._adopt(handle)  # at start: what ran before this gateway
            elif handle.state is SandboxState.PAUSED:
                self._adopt(handle, fresh=True)
            elif handle.state in (SandboxState.STARTING, SandboxState.RUNNING):
                self._watch_start(handle)  # new through another gateway: the firehose sees it start
            elif handle.state is SandboxState.EXITED and crashed(handle):
                self._adopt_failed(handle)  # crashed before this gateway knew it (or ran)
            return
        if record.status not in RUNNING or self.pausing.busy(record.id):
            return  # being started, stopped, paused or resumed here right now
        if handle.state is SandboxState.EXITED:
            if crashed(handle):
                # No removal looks like this: it fails at once. Its sandbox stays EXITED until the
                # next reconcile's clean-up, so the other gateways' listings see the crash too.
                self._fail(record, handle.reason or "the sandbox exited unexpectedly")
                return
            again = await self._exited_or_removed(handle)
            if self._records.get(handle.conversation_id) is not record or record.status not in RUNNING:
                return  # failed, stopped or ended meanwhile (by a request or a delete here)
            if again is None:
                self._end_elsewhere(record, GONE_ELSEWHERE)
                return
            with contextlib.suppress(RuntimeFailure):
                await self.runtime.remove(handle.conversation_id)  # idempotent across gateways
            if self._records.get(handle.conversation_id) is record and record.status in RUNNING:
                reason = (again.reason if again is not None else None) or handle.reason
                self._fail(record, reason or "the sandbox exited unexpectedly")
        elif handle.state is SandboxState.PAUSED and record.status is ConversationStatus.READY:
            self._paused_elsewhere(record, handle)
        elif handle.state is SandboxState.RUNNING and record.status is ConversationStatus.PAUSED:
            record.handle, record.status = handle, ConversationStatus.READY  # resumed elsewhere
            self.touch(record)
            self._bus.publish(StatusNotice(record.id, ConversationStatus.READY))

    async def reconcile(self) -> None:
        """:meth:`sync`, then the pool's spares and the runtime's orphans (see the module
        docstring); the sync and the clean-up each in a round of their own (the clean-up removes
        EXITED sandboxes, which must not happen while a sync round looks at one again)."""
        async with self._round():
            listed = await self._sync_once()
        spares = [handle for handle in listed if handle.spec.pool is not None]
        await self.pool.reconcile([spare for spare in spares if spare.conversation_id not in self._records])
        async with self._round():
            with contextlib.suppress(RuntimeFailure):
                await self.runtime.cleanup_orphans()

    async def sync_quietly(self) -> None:
        """:meth:`sync` for the housekeeping loop: an engine that does not answer changes nothing."""
        with contextlib.suppress(RuntimeFailure):
            await self.sync()
