"""Snapshots and forks: saved copies of a workspace, and conversations started from one.

Contracts:
- A snapshot belongs to the principal who took it (the conversation's owner
  may be another when an admin takes it: the snapshot is the taker's). Another
  principal's snapshot is :class:`NotFound`, exactly like an unknown id; an
  admin sees and removes every snapshot.
- Snapshots are the runtime's (:meth:`Runtime.snapshots`), not this gateway's:
  they survive the conversation they were taken of and a restart of the
  gateway. Nothing but :meth:`SnapshotManager.delete` removes one.
- A principal keeps at most ``max_snapshots_per_user``; past it, 429 with a
  message saying so (nothing is copied).
- Only a READY conversation can be snapshotted or forked (409 for ERROR and
  STOPPING); as for every request, a STARTING one is waited for and a PAUSED
  one resumed first. The runtime freezes the original while it copies.
- A fork is a new conversation of the original's owner with the original's
  options (limits, internet, egress, env, idle timeout and policy), titled
  ``"<title> (fork)"`` unless given, whose workspace is a copy of the
  original's when its sandbox starts; its first event after READY is
  ``Forked`` with the original's id and the seq the original had reached.
  Processes, terminals and events are not copied. The two are independent.
  ``POST .../fork`` answers once the fork's start is over (READY, or ERROR):
  nothing done to the original after the answer reaches the fork.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import UUID, uuid4

import httpx

from gateway.agent_calls import last_seq
from gateway.auth import Principal, can_access
from gateway.conversations import ConversationManager
from gateway.errors import InvalidInput, LimitReached, NotFound
from gateway.models import (
    ConversationCreate,
    ConversationLimits,
    EgressPolicy,
    ForkCreate,
    Page,
    Snapshot,
    SnapshotCreate,
)
from gateway.records import Record
from gateway.runtimes.base import SnapshotInfo, WorkspaceSeed
from gateway.settings import Settings
from sandbox_agent import paging


def _view(info: SnapshotInfo) -> Snapshot:
    return Snapshot(
        id=info.id,
        name=info.name,
        owner=info.owner,
        created_at=info.created_at,
        size=info.size,
        conversation_id=info.conversation_id,
    )


class SnapshotManager:
    def __init__(self, settings: Settings, manager: ConversationManager, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._manager = manager
        self._runtime = manager.runtime
        self._http = http
        #: Serialises creates, so two at once cannot both pass the quota.
        self._creating = asyncio.Lock()

    async def _visible(self, principal: Principal) -> list[SnapshotInfo]:
        every = await self._runtime.snapshots()
        return [info for info in every if can_access(principal, info.owner)]

    # --- snapshots ------------------------------------------------------------------

    async def create(self, principal: Principal, conversation_id: UUID, body: SnapshotCreate) -> Snapshot:
        record = await self._manager.get(conversation_id, principal)
        await self._manager.ready_handle(record)
        async with self._creating:
            mine = [info for info in await self._runtime.snapshots() if info.owner == principal.name]
            if len(mine) >= self._settings.max_snapshots_per_user:
                raise LimitReached(
                    f"{principal.name!r} already keeps {len(mine)} snapshots, the maximum per user "
                    f"(max_snapshots_per_user); delete one first"
                )
            info = SnapshotInfo(
                id=uuid4(),
                owner=principal.name,
                name=body.name,
                created_at=datetime.now(UTC),
                size=0,
                conversation_id=record.id,
            )
            return _view(await self._runtime.snapshot(record.id, info))

    async def page(self, principal: Principal, page_id: str | None, limit: int) -> Page[Snapshot]:
        """Oldest first (ties by id); the cursor names the last one of the page."""
        found = sorted(await self._visible(principal), key=lambda info: (info.created_at, str(info.id)))
        if page_id:
            try:
                after_created, after_id = paging.decode(page_id).split("|", 1)
            except ValueError:
                raise InvalidInput("page_id is not a cursor this gateway handed out") from None
            found = [i for i in found if (i.created_at.isoformat(), str(i.id)) > (after_created, after_id)]
        chunk = found[:limit]
        more = len(found) > limit and bool(chunk)
        cursor = paging.encode(f"{chunk[-1].created_at.isoformat()}|{chunk[-1].id}") if more else None
        return Page[Snapshot](results=[_view(info) for info in chunk], next_page_id=cursor)

    async def _find(self, principal: Principal, snapshot_id: UUID) -> SnapshotInfo:
        for info in await self._visible(principal):
            if info.id == snapshot_id:
                return info
        raise NotFound(f"snapshot {snapshot_id} not found")

    async def get(self, principal: Principal, snapshot_id: UUID) -> Snapshot:
        return _view(await self._find(principal, snapshot_id))

    async def delete(self, principal: Principal, snapshot_id: UUID) -> None:
        info = await self._find(principal, snapshot_id)
        await self._runtime.remove_snapshot(info.id)

    async def seed(self, principal: Principal, snapshot_id: UUID | None) -> WorkspaceSeed | None:
        """The seed of ``POST /conversation {"snapshot": id}``: NotFound for another's."""
        if snapshot_id is None:
            return None
        return WorkspaceSeed(snapshot_id=(await self._find(principal, snapshot_id)).id)

    # --- forks ----------------------------------------------------------------------

    async def fork(self, principal: Principal, conversation_id: UUID, body: ForkCreate) -> Record:
        original = await self._manager.get(conversation_id, principal)
        seq = await last_seq(self._http, await self._manager.ready_handle(original))
        spec = original.spec
        options = ConversationCreate(
            title=body.title if body.title is not None else f"{spec.title} (fork)"[:200],
            env=dict(spec.env),
            limits=ConversationLimits(
                memory_bytes=spec.limits.memory_bytes, cpus=spec.limits.cpus, pids=spec.limits.pids
            ),
            idle_timeout=original.idle_timeout,
            internet=spec.internet,
            egress=None if spec.egress is None else EgressPolicy(allow=list(spec.egress)),
            on_idle="pause" if spec.on_idle == "pause" else "delete",
        )
        owner = principal if principal.name == spec.owner else Principal(name=spec.owner)
        seed = WorkspaceSeed(conversation_id=original.id)
        fork = await self._manager.create(owner, options, seed=seed, forked_from=(original.id, seq))
        # Answered once the copy is made (the fork READY, or ERROR): what the caller does to
        # the original after the answer never reaches the fork.
        if fork.start_task is not None:
            await asyncio.wait({fork.start_task}, timeout=self._settings.start_timeout + 5.0)
        return fork
