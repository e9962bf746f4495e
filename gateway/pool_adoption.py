"""What a restart (or another gateway of the installation) leaves to the pool: spares the
runtime lists, adopted, dropped or removed (see :mod:`gateway.pool`).

Contracts of :meth:`Adoption.reconcile`: RUNNING spares that answer ``/ready`` as spares are
adopted; EXITED ones, those of a pool that keeps none any more, and spares STARTING for
longer than a start may take (half-made by a gateway killed meanwhile) are removed; a ready
spare here that a listing shows no more is dropped once the runtime confirms it is gone or
claimed. Spares handed out or being started here are never touched.
:meth:`Adoption.remove_spares` (the shutdown) removes only what still answers as a spare:
one claimed meanwhile through another gateway is a conversation's, and stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from gateway.errors import RuntimeFailure
from gateway.pool_refill import remove_spare
from gateway.pool_spares import Spares
from gateway.runtimes.base import Runtime, SandboxHandle, SandboxState

log = logging.getLogger("convoy.gateway")


class Adoption:
    def __init__(
        self,
        spares: Spares,
        runtime: Runtime,
        http: httpx.AsyncClient,
        default_key: str,
        half_made_after: float,
    ) -> None:
        self._spares = spares
        self._runtime = runtime
        self._http = http
        self._default_key = default_key
        self._half_made_after = half_made_after

    async def reconcile(self, listed_spares: list[SandboxHandle], closing: bool) -> None:
        """See the module docstring; ``closing``: adopt nothing more (the shutdown removes)."""
        listed = {handle.conversation_id for handle in listed_spares}
        for spare_id in self._spares.ready_ids() - listed:
            # Not listed: vanished, or ready only since the listing was taken (then it is there).
            with contextlib.suppress(RuntimeFailure):
                found = await self._runtime.find(spare_id)
                if found is None or found.spec.pool is None:  # gone, or claimed elsewhere
                    self._spares.drop(spare_id)
        ready_ids = self._spares.ready_ids()
        for handle in listed_spares:
            spare_id = handle.conversation_id
            key = handle.spec.pool or self._default_key
            if self._spares.handed_out(spare_id) or spare_id in self._spares.starting:
                continue
            if handle.state is SandboxState.EXITED or key not in self._spares.keys:  # ended, or no pool now
                self._spares.drop(spare_id)
                await remove_spare(self._runtime, spare_id)
            elif spare_id in ready_ids or closing:
                continue
            elif handle.state is SandboxState.RUNNING and await self.still_spare(handle):
                self._spares.add(key, handle)
                log.info("adopted spare sandbox %s (pool %s)", spare_id, key)
            elif time.time() - handle.spec.created_at.timestamp() > self._half_made_after:
                log.info("removing half-made spare sandbox %s", spare_id)
                await remove_spare(self._runtime, spare_id)

    async def still_spare(self, handle: SandboxHandle) -> bool:
        """Whether its agent answers as a spare (ready, not claimed: by another gateway, say)."""
        try:
            response = await self._http.get(f"{handle.base_url}/ready", timeout=2.0)
            return response.status_code == 200 and response.json().get("spare") is True
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    async def remove_spares(self, handles: list[SandboxHandle]) -> None:
        """The shutdown's removal of ``handles`` (see the module docstring)."""

        async def remove_if_spare(handle: SandboxHandle) -> None:
            found = await self._runtime.find(handle.conversation_id)
            if found is None or found.spec.pool is None:
                return
            if found.state is SandboxState.EXITED or await self.still_spare(found):
                await remove_spare(self._runtime, handle.conversation_id)

        await asyncio.gather(*(remove_if_spare(handle) for handle in handles), return_exceptions=True)
