"""The gateway's background loops: idle reaping, syncing and reconciliation, each on its interval.

A failing round is logged and the loop goes on: housekeeping must never stop
because one sandbox misbehaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.conversations import ConversationManager
from gateway.settings import Settings

log = logging.getLogger("convoy.gateway")


class Housekeeper:
    """Runs the duties; :meth:`stop` lets a round in progress finish (a sandbox
    half removed would be left behind), then ends the loops."""

    def __init__(self, settings: Settings, manager: ConversationManager) -> None:
        self._settings = settings
        self._manager = manager
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._every(self._settings.reap_interval, self._manager.reap, "reap")),
            asyncio.create_task(
                self._every(self._settings.reconcile_interval, self._manager.reconcile, "reconcile")
            ),
            # What other gateways of the installation did, seen within sync_interval (gateway.reconciling).
            asyncio.create_task(
                self._every(self._settings.sync_interval, self._manager.sync_quietly, "sync")
            ),
        ]

    async def _every(self, interval: float, duty: Callable[[], Awaitable[object]], name: str) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            try:
                await duty()
            except Exception:
                log.exception("%s round failed; trying again in %gs", name, interval)

    async def stop(self, grace: float = 60.0) -> None:
        self._stopping.set()
        _, pending = await asyncio.wait(self._tasks, timeout=grace) if self._tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
