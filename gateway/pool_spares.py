"""The spares one gateway's pool holds: ready ones per pool, those it is starting, and the ids
it handed out (see :mod:`gateway.pool`).

Contract: a spare is in at most one of *ready* and *starting*; an id once handed out
(:meth:`Spares.take`, :meth:`Spares.hand_out`) is never held as ready again, whatever a
listing says later. Synchronous: a create takes its spare in the same step as it registers.
"""

from __future__ import annotations

from collections import deque
from uuid import UUID

from gateway.runtimes.base import SandboxHandle


class Spares:
    def __init__(self, sizes: dict[str, int], max_spares: int) -> None:
        #: Spares kept per pool (its template), as configured.
        self.sizes = sizes
        self._max_spares = max_spares
        self._ready: dict[str, deque[SandboxHandle]] = {key: deque() for key, n in sizes.items() if n}
        self.starting: dict[UUID, str] = {}  # spares this gateway is starting, by id: their key
        self._handed_out: set[UUID] = set()

    @property
    def keys(self) -> list[str]:
        """The pools that keep spares."""
        return list(self._ready)

    def ready_count(self) -> int:
        return sum(len(spares) for spares in self._ready.values())

    def ready_ids(self) -> set[UUID]:
        return {handle.conversation_id for spares in self._ready.values() for handle in spares}

    def ready_handles(self) -> list[SandboxHandle]:
        return [handle for spares in self._ready.values() for handle in spares]

    def missing(self, key: str) -> int:
        """How many spares pool ``key`` lacks, within the bound on all spares."""
        have = len(self._ready[key]) + sum(1 for wanted in self.starting.values() if wanted == key)
        held = self.ready_count() + len(self.starting)
        return min(self.sizes.get(key, 0) - have, self._max_spares - held)

    def take(self, key: str) -> SandboxHandle | None:
        """A ready spare of pool ``key``, handed out for good; ``None`` when there is none."""
        spares = self._ready.get(key)
        if not spares:
            return None
        spare = spares.popleft()
        self._handed_out.add(spare.conversation_id)
        return spare

    def add(self, key: str, handle: SandboxHandle) -> None:
        """``handle`` is a ready spare of pool ``key`` (made or adopted here)."""
        self._ready[key].append(handle)

    def handed_out(self, spare_id: UUID) -> bool:
        return spare_id in self._handed_out

    def hand_out(self, spare_id: UUID) -> None:
        """``spare_id`` belongs to a conversation now (here or elsewhere): never ready again."""
        self._handed_out.add(spare_id)
        self.drop(spare_id)

    def drop(self, spare_id: UUID) -> None:
        """No longer ready here (gone, or claimed elsewhere)."""
        for key, ready in self._ready.items():
            self._ready[key] = deque(handle for handle in ready if handle.conversation_id != spare_id)

    def clear(self) -> list[SandboxHandle]:
        """Every ready spare, no longer held (the shutdown removes them)."""
        handles = self.ready_handles()
        for spares in self._ready.values():
            spares.clear()
        return handles
