"""The lifecycle of conversations: create, get, list, delete, reconcile, reap.

The gateway keeps no database: a :class:`Record` per conversation lives in
memory and is rebuilt from :meth:`Runtime.list` at start (:meth:`reconcile`).
What a record knows beyond the runtime's metadata is transient: the start
phase, the error of a failed start (kept ``error_retention`` seconds), and
activity (last request, open connections) for idle reaping.

Contracts:
- :meth:`create` answers at once with a STARTING record; the sandbox starts in
  the background and the record becomes READY or ERROR (with the reason). Each
  change is published on the :class:`StatusBus`.
- Limits: live conversations (STARTING, READY, PAUSED, STOPPING) count against the
  global and the per-owner maximum; past either, :class:`LimitReached` (429).
  So do an owner's recent failed starts and its create rate (:mod:`gateway.admission`).
  Nothing running is ever stopped to make room.
- An ERROR reason a client sees names no host path (:func:`public_reason`);
  the gateway's log has it whole.
- :meth:`delete` and reaping first record STOPPING with the reason in the
  sandbox's own event log (``POST /status``), so followers see why, then remove
  the sandbox; afterwards the id is unknown (404) everywhere.
- Another owner's conversation is :class:`NotFound`, exactly like an unknown id.
- PAUSED (:mod:`gateway.pausing`): every route that needs the sandbox
  (:meth:`ready_handle`) resumes it first; an idle one with ``on_idle="pause"`` is
  paused instead of removed, and removed ``paused_ttl`` seconds later; reconcile
  adopts a paused sandbox as PAUSED.
- The pool (:mod:`gateway.pool`): a create whose options a spare can take claims
  one (``start`` "warm"; READY once the claim's one call returns), else starts
  cold (and the pool refills). Spares are no conversations: reconcile hands them
  to the pool; they are never listed, counted or reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import httpx

from gateway.admission import Admission
from gateway.agent_calls import announce_forked, announce_stopping, has_unfinished_task
from gateway.auth import Principal, can_access
from gateway.errors import (
    InvalidInput,
    LimitReached,
    NotFound,
    NotReady,
    ShuttingDown,
    SpareTaken,
    StillStarting,
    public_reason,
)
from gateway.models import Conversation, ConversationCreate
from gateway.pausing import Pauser
from gateway.pool import Pool
from gateway.records import Record, cursor_of, parse_cursor, sort_key
from gateway.runtimes.base import (
    ResourceLimits,
    Runtime,
    RuntimeFailure,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    WorkspaceSeed,
)
from gateway.settings import Settings
from gateway.status import StatusBus, StatusNotice
from sandbox_agent.protocol import ConversationStatus, Page

log = logging.getLogger("convoy.gateway")

#: How much longer than a start may take a request waits for a STARTING conversation.
_START_WAIT_MARGIN = 5.0

#: Seconds ``POST /conversation`` waits for a warm create's claim to settle.
_CLAIM_WAIT = 5.0

_RUNNING = (ConversationStatus.READY, ConversationStatus.PAUSED)  # a sandbox reconcile holds to account
_LIVE = (ConversationStatus.STARTING, ConversationStatus.STOPPING, *_RUNNING)
#: What reconcile adopts without a record (STARTING: a start under way here or elsewhere).
_ADOPTABLE = (SandboxState.RUNNING, SandboxState.PAUSED)


class ConversationManager:
    def __init__(self, settings: Settings, runtime: Runtime, bus: StatusBus, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self.runtime = runtime
        self._bus = bus
        self._http = http
        self._records: dict[UUID, Record] = {}
        self._removed_at: dict[UUID, float] = {}
        self._admission = Admission(settings)
        state_dir = settings.state_dir
        self._state_dirs = tuple(sorted({str(state_dir), str(state_dir.absolute())}, key=len, reverse=True))
        self.closing = False
        self.pausing = Pauser(settings, runtime, bus, http)
        #: Ready spare sandboxes (gateway/pool.py); started by the app after the first reconcile.
        self.pool = Pool(settings, runtime, http)

    # --- queries ----------------------------------------------------------------

    def get(self, conversation_id: UUID, principal: Principal) -> Record:
        record = self._records.get(conversation_id)
        if record is None or not can_access(principal, record.spec.owner):
            raise NotFound(f"conversation {conversation_id} not found")
        return record

    def lookup(self, conversation_id: UUID) -> Record | None:
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
                    async with asyncio.timeout(self._settings.start_timeout + _START_WAIT_MARGIN):
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
        records = sorted(self._records.values(), key=sort_key)
        if page_id:
            after = parse_cursor(page_id)
            records = [r for r in records if sort_key(r) > after]
        chunk = records[:limit]
        more = len(records) > limit
        return Page[Conversation](
            results=[r.view() for r in chunk], next_page_id=cursor_of(chunk[-1]) if more and chunk else None
        )

    def count(self) -> int:
        return len(self._records)

    # --- activity ---------------------------------------------------------------

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

    # --- create -----------------------------------------------------------------

    async def checked(self, body: ConversationCreate) -> ConversationCreate:
        """``body`` naming its template (the default one when it names none); :class:`InvalidInput`
        (422, listing the known ones) when the runtime has no template of that name."""
        wanted = body.template or self._settings.default_template
        known = [template.name for template in await self.runtime.templates()]
        if wanted not in known:
            raise InvalidInput(f"unknown template {wanted!r}; known templates: {', '.join(known)}")
        return body.model_copy(update={"template": wanted})

    def create(
        self,
        principal: Principal,
        body: ConversationCreate,
        seed: WorkspaceSeed | None = None,
        forked_from: tuple[UUID, int] | None = None,
    ) -> Record:
        """Registers a STARTING conversation and starts its sandbox in the background.
        Synchronous on purpose: the limit check and the registration cannot interleave.
        ``seed``: the workspace it starts with; ``forked_from``: the original's id and seq,
        recorded as its first event after READY (see :mod:`gateway.snapshots`)."""
        if self.closing:
            raise ShuttingDown("the gateway is shutting down")
        idle = body.idle_timeout or self._settings.idle_timeout
        if idle > self._settings.max_idle_timeout:
            raise InvalidInput(f"idle_timeout may be at most {self._settings.max_idle_timeout:g} seconds")
        if body.egress is not None and not self.runtime.enforces_egress:
            raise InvalidInput(
                f"the {self.runtime.name} runtime cannot enforce an egress allow-list; "
                "use the docker runtime, or leave egress out"
            )
        live = [r for r in self._records.values() if r.status in _LIVE]
        if len(live) >= self._settings.max_conversations:
            raise LimitReached(
                f"the gateway already runs its maximum of {self._settings.max_conversations} conversations; "
                "delete one or try again later"
            )
        mine = sum(1 for r in live if r.spec.owner == principal.name)
        if mine >= self._settings.max_conversations_per_user:
            raise LimitReached(
                f"{principal.name!r} already has {mine} live conversations, the maximum per user; "
                "delete one first"
            )
        self._admission.admit(principal.name)
        # The pool: a ready sandbox, if one fits (a seeded workspace never does: a spare's is empty).
        spare = None if seed is not None else self.pool.take(self.pool.key_for(body))
        spec = SandboxSpec(
            conversation_id=uuid4() if spare is None else spare.conversation_id,
            owner=principal.name,
            title=body.title,
            token=secrets.token_urlsafe(32),
            created_at=datetime.now(UTC),
            env=dict(body.env),
            limits=ResourceLimits(**body.limits.model_dump()),
            internet=body.internet,
            idle_timeout=idle,
            egress=None if body.egress is None else tuple(body.egress.allow),
            on_idle=body.on_idle or self._settings.on_idle,
            seed=seed,
            template=body.template or self._settings.default_template,
        )
        phase = "accepted" if spare is None else "claiming a ready sandbox"
        record = Record(spec=spec, status=ConversationStatus.STARTING, idle_timeout=idle, phase=phase)
        record.start = "cold" if spare is None else "warm"
        record.forked_from = forked_from
        self._records[record.id] = record
        self._bus.publish(StatusNotice(record.id, ConversationStatus.STARTING, phase=record.phase))
        record.start_task = asyncio.create_task(self._start(record, spare), name=f"start {record.id}")
        return record

    async def until_claimed(self, record: Record) -> None:
        """Waits for a warm create's claim (one call to the spare; a cold start after a failed
        claim is not waited for beyond a few seconds): so ``POST`` answers READY."""
        task = record.start_task
        if record.start != "warm" or task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), _CLAIM_WAIT)
        except asyncio.CancelledError:
            if not task.cancelled():  # this request is cancelled, not the start (by a delete)
                raise
        except TimeoutError:
            pass  # a cold start after a failed claim: answered STARTING

    async def _claim(self, record: Record, spare: SandboxHandle) -> bool:
        """The warm start: READY once the spare is claimed (True); False to start cold."""
        try:
            handle = await self.pool.claim(spare, record.spec)
        except SpareTaken:  # another gateway of the installation took it: the id is its now
            self._fail(record, "the ready sandbox was taken by another gateway; create again")
            return True
        if handle is None:
            record.start, record.phase = "cold", "accepted"
            return False
        self._ready(record, handle)
        return True

    def _ready(self, record: Record, handle: SandboxHandle) -> None:
        record.handle, record.status, record.phase = handle, ConversationStatus.READY, None
        record.ready_at = time.monotonic()
        self.touch(record)
        self._bus.publish(StatusNotice(record.id, ConversationStatus.READY, fresh=True))

    async def _start(self, record: Record, spare: SandboxHandle | None = None) -> None:
        async def progress(phase: str) -> None:
            record.phase = phase
            self._bus.publish(StatusNotice(record.id, ConversationStatus.STARTING, phase=phase))

        if spare is not None and await self._claim(record, spare):
            return
        try:
            async with self.pool.cold_start():
                handle = await self.runtime.start(record.spec, progress)
        except RuntimeFailure as error:
            self._fail(record, str(error), failed_start=True)
            return
        except Exception as error:  # a runtime bug must not leave the record STARTING forever
            log.exception("starting conversation %s failed", record.id)
            self._fail(record, f"the sandbox could not be started: {error!r}", failed_start=True)
            with contextlib.suppress(Exception):
                await self.runtime.remove(record.id)
            return
        if record.forked_from is not None:  # before READY: no client can record anything first
            await announce_forked(self._http, handle, *record.forked_from)
        self._ready(record, handle)

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

    # --- stop -------------------------------------------------------------------

    async def delete(self, conversation_id: UUID, principal: Principal) -> None:
        record = self.get(conversation_id, principal)
        await self._stop(record, f"deleted by {principal.name}")

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
            await self.runtime.remove(record.id)
        except RuntimeFailure as error:
            log.warning("removing the sandbox of %s failed (reconcile retries): %s", record.id, error)
        self._records.pop(record.id, None)
        self.pausing.forget(record.id)
        self._removed_at[record.id] = time.monotonic()
        record.gone.set()
        self._bus.publish(StatusNotice(record.id, ConversationStatus.STOPPING, reason=reason, ended=True))

    # --- background duties ------------------------------------------------------

    async def reap(self) -> int:
        """Removes idle conversations and forgets failed ones past their retention.
        Returns how many were reaped."""
        now = time.monotonic()
        reaped = 0
        for record in list(self._records.values()):
            if record.status is ConversationStatus.ERROR:
                if now - record.failed_at >= self._settings.error_retention:
                    self._records.pop(record.id, None)
                continue
            if self.pausing.expired(record, now):
                await self._stop(record, f"paused for {self._settings.paused_ttl:g}s (paused_ttl)")
                reaped += 1
                continue
            if record.status is not ConversationStatus.READY or record.handle is None or record.connections:
                continue
            if now - record.last_active < record.idle_timeout:
                continue
            if await has_unfinished_task(self._http, record.handle):
                self.touch(record)
                continue
            if record.connections or time.monotonic() - record.last_active < record.idle_timeout:
                continue  # became active while we asked
            idle = f"idle for {record.idle_timeout:g}s: no request, connection or running task"
            if not await self.pausing.paused_when_idle(record, idle):
                await self._stop(record, idle)
                reaped += 1
        return reaped

    async def reconcile(self) -> None:
        """Brings the records in line with the runtime: adopts live sandboxes this
        gateway does not know (after a restart), fails READY conversations whose
        sandbox exited or vanished, removes exited sandboxes and orphans."""
        began = time.monotonic()
        listed = await self.runtime.list()
        # The pool's spares are no conversations: the pool reconciles them (a claimed one that a
        # listing still shows as a spare is no vanished conversation either).
        spares = [handle for handle in listed if handle.spec.pool is not None]
        handles = {handle.conversation_id: handle for handle in listed if handle.spec.pool is None}
        spare_ids = {handle.conversation_id for handle in spares}
        self._removed_at = {key: at for key, at in self._removed_at.items() if began - at < 600}
        for conversation_id, handle in handles.items():
            record = self._records.get(conversation_id)
            if conversation_id in self._removed_at or (record and record.status not in _RUNNING):
                continue  # being started or stopped right now, or just removed
            if handle.state is SandboxState.EXITED:
                with contextlib.suppress(RuntimeFailure):
                    await self.runtime.remove(conversation_id)
                if record is not None and self._records.get(conversation_id) is record:
                    self._fail(record, self._exit_reason(handle))
            elif record is None and handle.state in _ADOPTABLE and not self.closing:
                self._adopt(handle)  # STARTING: a start under way here or elsewhere, not adopted
        for record in [r for r in self._records.values() if r.status in _RUNNING and r.handle]:
            if (
                record.id not in handles
                and record.id not in spare_ids
                and record.ready_at < began
                and self._records.get(record.id) is record
            ):
                self._fail(record, "the sandbox disappeared")
        await self.pool.reconcile([spare for spare in spares if spare.conversation_id not in self._records])
        with contextlib.suppress(RuntimeFailure):
            await self.runtime.cleanup_orphans()

    def _adopt(self, handle: SandboxHandle) -> None:
        idle = handle.spec.idle_timeout or self._settings.idle_timeout
        paused = handle.state is SandboxState.PAUSED
        status = ConversationStatus.PAUSED if paused else ConversationStatus.READY
        record = Record(spec=handle.spec, status=status, idle_timeout=idle, handle=handle)
        record.ready_at = record.paused_at = time.monotonic()
        self._records[record.id] = record
        log.info("adopted conversation %s of %s (%s)", record.id, record.spec.owner, status.value)
        self._bus.publish(StatusNotice(record.id, status))

    @staticmethod
    def _exit_reason(handle: SandboxHandle) -> str:
        # Runtimes that know how a sandbox ended say it in ``reason`` (Docker: OOM, exit code).
        return handle.reason or "the sandbox exited unexpectedly"

    async def close(self) -> None:
        """Stops accepting conversations, cancels starts in progress (their
        half-started sandboxes are removed by the runtime) and removes the pool's spares."""
        self.closing = True
        tasks = [r.start_task for r in self._records.values() if r.start_task and not r.start_task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pool.close()  # spares are removed; conversations keep running
