"""The lifecycle of conversations: create and start; the rest by layer.

:class:`ConversationManager` is the one object the routes use. Its layers, one
module each: what a gateway holds in memory and how a conversation ends
(:mod:`gateway.conversation_core`), how the records follow the runtime that
every gateway of the installation shares (:mod:`gateway.reconciling`), idle
reaping (:mod:`gateway.reaping`), the limits across gateways
(:mod:`gateway.limits`); this module creates and starts.

Contracts:
- :meth:`create` answers with a STARTING record (READY for a warm one) once the
  start is registered in the runtime and the limits still hold (at most the
  registration's time: on Docker, the volume, network and container creation);
  the sandbox starts in the background and the record becomes READY or ERROR (with
  the reason). Each change is published on the :class:`StatusBus`.
- Limits (:mod:`gateway.limits`): live conversations of the whole installation
  count against the global and the per-owner maximum; past either,
  :class:`LimitReached` (429). So do an owner's recent failed starts and its create
  rate here (:mod:`gateway.admission`). Nothing running is ever stopped to make room.
- An ERROR reason a client sees names no host path (:func:`public_reason`);
  the gateway's log has it whole.
- PAUSED (:mod:`gateway.pausing`): every route that needs the sandbox
  (:meth:`ready_handle`) resumes it first; an idle one with ``on_idle="pause"`` is
  paused instead of removed, and removed ``paused_ttl`` seconds later.
- The pool (:mod:`gateway.pool`): a create whose options a spare can take claims
  one (``start`` "warm"; READY once the claim's one call returns), else starts
  cold (and the pool refills). Spares are no conversations: they are never
  listed, counted or reaped.
- Two gateways whose pools hold the same spare (each adopts what the other
  made) may both take it; the runtime lets one claim win (:class:`SpareTaken`
  for the other). The loser's create goes on as a cold start under a new id and
  token (:meth:`ConversationManager._taken_elsewhere`): its client gets that id
  (POST's 201 and ``WS /conversation/``'s frames name it), the loser keeps no
  record of the spare's id (the winner's conversation, which it then finds as
  any other: its firehose shows it starting and READY, never failed or ended),
  and the limits count the create once throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
import time
from datetime import UTC, datetime
from uuid import UUID, uuid4

from gateway import limits
from gateway.agent_calls import announce_forked
from gateway.auth import Principal
from gateway.conversation_core import LIVE
from gateway.errors import InvalidInput, LimitReached, RuntimeFailure, ShuttingDown, SpareTaken
from gateway.models import ConversationCreate
from gateway.reaping import Reaper
from gateway.records import Record
from gateway.runtimes.base import ResourceLimits, SandboxHandle, SandboxSpec, WorkspaceSeed
from gateway.runtimes.templates import DEFAULT_TEMPLATE
from gateway.status import StatusNotice
from sandbox_agent.protocol import ConversationStatus

log = logging.getLogger("convoy.gateway")

#: Seconds ``POST /conversation`` waits for a warm create's claim to settle.
_CLAIM_WAIT = 5.0
#: Seconds between two looks at whether a cold start is registered in the runtime yet.
_REGISTERED_POLL = 0.05
#: The limits' second check: how many looks at most, and the seconds between two (gateway.limits).
_LOOKS = 4
_LOOK_AGAIN = 0.25


class ConversationManager(Reaper):
    async def checked(self, body: ConversationCreate) -> ConversationCreate:
        """``body`` naming its template (the default one when it names none); :class:`InvalidInput`
        (422, listing the known ones) when the runtime has no template of that name. The
        runtime's own, :data:`DEFAULT_TEMPLATE`, is always there: no engine is asked for it
        (on Docker, two calls every create would pay, as much as a warm create's claim)."""
        wanted = body.template or self._settings.default_template
        if wanted == DEFAULT_TEMPLATE:
            return body.model_copy(update={"template": wanted})
        known = [template.name for template in await self.runtime.templates()]
        if wanted not in known:
            raise InvalidInput(f"unknown template {wanted!r}; known templates: {', '.join(known)}")
        return body.model_copy(update={"template": wanted})

    async def create(
        self,
        principal: Principal,
        body: ConversationCreate,
        seed: WorkspaceSeed | None = None,
        forked_from: tuple[UUID, int] | None = None,
    ) -> Record:
        """Registers a STARTING conversation, starts its sandbox in the background, and answers
        once the limits are known to hold (see the module docstring and :mod:`gateway.limits`).
        ``seed``: the workspace it starts with; ``forked_from``: the original's id and seq,
        recorded as its first event after READY (see :mod:`gateway.snapshots`)."""
        self._refuse_bad(body)
        listed = await self.runtime.list()
        # From here to the registration, no await: two creates of this gateway cannot interleave.
        if self.closing:
            raise ShuttingDown("the gateway is shutting down")
        live = [r for r in self._records.values() if r.status in LIVE]
        refusal = limits.refusal(self._settings, principal.name, limits.live_entries(listed, live).values())
        if refusal is not None:
            raise refusal
        self._admission.admit(principal.name)
        record = self._register(principal, body, seed, forked_from)
        return await self._settle(record)

    def _refuse_bad(self, body: ConversationCreate) -> None:
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

    def _register(
        self,
        principal: Principal,
        body: ConversationCreate,
        seed: WorkspaceSeed | None,
        forked_from: tuple[UUID, int] | None,
    ) -> Record:
        idle = body.idle_timeout or self._settings.idle_timeout
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

    # --- the check after the registration (gateway.limits) ----------------------------

    async def _settle(self, record: Record) -> Record:
        """Waits until ``record``'s start is registered (a warm one: its claim made), then makes
        the second limit check: :class:`LimitReached` after undoing its start when it yields.
        Returns the record its client gets (its successor when another gateway took its spare)."""
        record = await self.until_claimed(record)
        task = record.start_task
        deadline = time.monotonic() + self._settings.start_timeout
        while task is not None and not task.done() and time.monotonic() < deadline:
            with contextlib.suppress(RuntimeFailure):
                if await self.runtime.find(record.id) is not None:
                    break
            await asyncio.wait({task}, timeout=_REGISTERED_POLL)
        seen_at = datetime.now(UTC)
        for look in range(_LOOKS):
            if record.status not in LIVE or self._records.get(record.id) is not record:
                return record  # failed (its client sees the ERROR) or deleted meanwhile: nothing survives
            try:
                listed = await self.runtime.list()
            except RuntimeFailure as error:
                log.warning("the limits could not be checked again for %s: %s", record.id, error)
                return record
            live = [r for r in self._records.values() if r.status in LIVE]
            entries = limits.live_entries(listed, live).values()
            verdict = limits.verdict(self._settings, limits.Entry.of(record.spec), seen_at, entries)
            if verdict is None:
                return record
            if verdict.final or look == _LOOKS - 1:
                await self._withdraw(record, verdict.reason)
                raise LimitReached(verdict.reason)
            # Only younger creates stand in the way, and they may yield: look again a little later
            # (jittered, so that two gateways do not look in step).
            await asyncio.sleep(_LOOK_AGAIN * (1 + random.random()))
        return record  # not reached: the last look withdraws or returns

    async def _withdraw(self, record: Record, reason: str) -> None:
        """Undo a start that yields: no client has its id; the firehose sees it end (ERROR)."""
        record.yielding = True
        log.info("conversation %s yields: %s", record.id, reason)
        if record.start_task is not None and not record.start_task.done():
            record.start_task.cancel()  # the runtime removes what the start made
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await record.start_task
        with contextlib.suppress(RuntimeFailure):
            await self.runtime.remove(record.id)  # a claimed spare, or a start that had finished
        if self._forget(record):
            record.status, record.reason, record.phase = ConversationStatus.ERROR, reason, None
            self._bus.publish(StatusNotice(record.id, ConversationStatus.ERROR, reason=reason, ended=True))

    # --- starting -----------------------------------------------------------------

    async def until_claimed(self, record: Record) -> Record:
        """Waits for a warm create's claim (one call to the spare; a cold start after a failed
        claim is not waited for beyond a few seconds): so ``POST`` answers READY. Returns the
        record the create goes on with: ``record``, or its cold successor under a new id when
        another gateway claimed the spare first."""
        task = record.start_task
        if record.start != "warm" or task is None:
            return record
        try:
            await asyncio.wait_for(asyncio.shield(task), _CLAIM_WAIT)
        except asyncio.CancelledError:
            if not task.cancelled():  # this request is cancelled, not the start (by a delete)
                raise
        except TimeoutError:
            pass  # a cold start after a failed claim: answered STARTING
        return record.successor or record

    async def _claim(self, record: Record, spare: SandboxHandle) -> bool:
        """The warm start: READY once the spare is claimed (True); False to start cold."""
        try:
            handle = await self.pool.claim(spare, record.spec)
        except SpareTaken:  # another gateway of the installation took it: the id is its now
            await self._taken_elsewhere(record)
            return True
        if handle is None:
            record.start, record.phase = "cold", "accepted"
            return False
        self._ready(record, handle)
        return True

    async def _taken_elsewhere(self, record: Record) -> None:
        """``record``'s spare was claimed through another gateway first: its create goes on cold
        in a successor with a new id and token (the old token went to another's agent), in the
        same step as the record is dropped (the limits here count the create once). The spare's
        id is not marked removed: it is the winner's conversation, looked up at once (a
        STARTING record watched until READY, or, while the runtime still shows a spare, found
        by the next sync). Holders of ``record`` see it STOPPING, with nothing published."""
        if self.closing:  # close() cancels the starts it saw: a new one would outlive it
            self._fail(record, "the gateway is shutting down")
            return
        spec = dataclasses.replace(record.spec, conversation_id=uuid4(), token=secrets.token_urlsafe(32))
        successor = Record(
            spec=spec, status=ConversationStatus.STARTING, idle_timeout=record.idle_timeout, phase="accepted"
        )
        log.info("the spare %s was claimed through another gateway: %s starts cold", record.id, successor.id)
        if self._records.get(record.id) is record:
            del self._records[record.id]
        self._records[successor.id] = successor
        record.successor = successor
        record.status, record.phase = ConversationStatus.STOPPING, None
        record.reason = "its ready sandbox went to a conversation of another gateway"
        record.gone.set()
        self._bus.publish(StatusNotice(successor.id, ConversationStatus.STARTING, phase=successor.phase))
        successor.start_task = asyncio.create_task(self._start(successor), name=f"start {successor.id}")
        with contextlib.suppress(RuntimeFailure):
            await self.discover(record.id)

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

    # --- stop -------------------------------------------------------------------

    async def delete(self, conversation_id: UUID, principal: Principal) -> None:
        record = await self.get(conversation_id, principal)
        await self._stop(record, f"deleted by {principal.name}")
