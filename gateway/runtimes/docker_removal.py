"""How the Docker runtime removes a conversation: first make its sandbox unable to run, then
take the rest away in the background (see :meth:`DockerSandboxes.remove`).

Contract of :class:`Removals`:
- :meth:`Removals.remove` returns once the sandbox can no longer run: its container is
  stopped (``docker_stop_grace``, none by default: killed) after a thaw when paused. What
  is left (both containers, then the volume and the network together, each needing both
  containers gone) is removed by a background task, every step run to its end even when
  another fails. Most of a teardown's time is the engine's: its kill of a container
  returns only after it has released the container's network and file system, and the
  relay, on two networks with a published port, takes the longest (a sandbox with no
  network has no relay: :mod:`gateway.runtimes.docker_sockets`).
- Until that task ends, :meth:`pending` names the conversation: the runtime lists it as
  absent and leaves it to the task; a second :meth:`remove` waits for the task and
  answers ``False``. :meth:`close` waits for every task.
- A sandbox that is already gone (a half-removed conversation) is finished at once.
- The gateway dying meanwhile leaves nothing for good: a stopped sandbox lists as
  EXITED and the reconcile of any later gateway removes it; a relay, volume or network
  no sandbox owns is an orphan that ``cleanup_orphans`` removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from uuid import UUID

from gateway.errors import EngineError, EngineNotFound
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker_engine import Engine
from gateway.runtimes.docker_sockets import SocketDirs

log = logging.getLogger("convoy.docker")


class Removals:
    """The removals under way in one runtime, each a background task."""

    def __init__(self, engine: Engine, stop_grace: float, sockets: SocketDirs | None = None) -> None:
        self._engine = engine
        self._stop_grace = stop_grace
        self._sockets = sockets
        self._tasks: dict[UUID, asyncio.Task[bool]] = {}

    def pending(self, conversation_id: UUID) -> bool:
        """Whether the rest of a removal of ``conversation_id`` is still under way."""
        return conversation_id in self._tasks

    async def remove(self, conversation_id: UUID, names: cfg.Names) -> bool:
        """End the sandbox and leave the rest to a background task (see the module's contract).
        ``True`` when something was there to remove."""
        under_way = self._tasks.get(conversation_id)
        if under_way is not None:
            await asyncio.shield(under_way)
            return False
        if not await self._end(names.sandbox):
            # half-removed: at once
            return await remove_all(self._engine, names, self._stop_grace, self._sockets)
        task = asyncio.create_task(self._rest(names), name=f"remove {names.sandbox}")
        self._tasks[conversation_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(conversation_id, None))
        return True

    async def _end(self, sandbox: str) -> bool:
        """Stop the sandbox's container so nothing in it runs any more; ``False`` when it is gone."""
        with contextlib.suppress(EngineError):  # not paused (or gone): stopped as it is
            await self._engine.unpause(sandbox)
        try:
            await self._engine.stop(sandbox, self._stop_grace)
        except EngineNotFound:
            return False
        except EngineError:  # refusing a stop (a removal under way): removed by force now
            return await self._engine.remove_container(sandbox)
        return True

    async def _rest(self, names: cfg.Names) -> bool:
        try:
            return await remove_all(self._engine, names, stop_grace=0.0, sockets=self._sockets)
        except Exception as error:  # the gateway's reconcile (cleanup_orphans) retries
            log.warning("removing what is left of %s failed: %s", names.sandbox, error)
            return False

    async def close(self) -> None:
        """Wait for the removals under way."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


async def remove_all(
    engine: Engine, names: cfg.Names, stop_grace: float, sockets: SocketDirs | None = None
) -> bool:
    """Remove everything of a conversation now: the sandbox (stopped with ``stop_grace``
    first when over 0, else killed by the forced removal) while the relay (if any) is removed,
    then the volume, the network (if any) and the socket directory (``sockets``: if any)
    together. Every step runs to its end even when another fails (the first error is raised after)."""

    async def sandbox() -> bool:
        with contextlib.suppress(EngineError):  # a paused sandbox is thawed first: it is stopped or killed
            await engine.unpause(names.sandbox)
        if stop_grace > 0:
            with contextlib.suppress(EngineError):  # gone, or refusing a stop: removed by force below
                await engine.stop(names.sandbox, stop_grace)
        return await engine.remove_container(names.sandbox)

    containers = await together(sandbox(), engine.remove_container(names.relay))
    leftovers = [engine.remove_volume(names.volume), engine.remove_network(names.network)]
    if sockets is not None:
        leftovers.append(sockets.remove(names))
    others = await together(*leftovers)
    return any(containers) or any(others)


async def together(*calls: Awaitable[bool]) -> list[bool]:
    """Run ``calls`` concurrently to their ends; their results, or the first one's error."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [bool(outcome) for outcome in outcomes]
