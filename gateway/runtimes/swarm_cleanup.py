"""The swarm runtime's removal and orphan clean-up (see :mod:`gateway.runtimes.swarm`): a
mixin over the runtime's engine and caches."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from uuid import UUID

from gateway.errors import EngineError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes import swarm_config as scfg
from gateway.runtimes.base import SandboxState
from gateway.runtimes.docker_engine import conversation_of, quietly, young
from gateway.runtimes.swarm_engine import SwarmEngine
from gateway.runtimes.swarm_sandboxes import HandleReader, read_world
from gateway.runtimes.swarm_state import ENDED
from gateway.runtimes.usage_probes import PeakMemory

log = logging.getLogger("convoy.gateway")
#: Seconds remove() waits for the manager to let go of a network or config a task still holds.
RELEASE_WAIT = 20.0


class SwarmCleanup:
    """remove() and cleanup_orphans()."""

    _engine: SwarmEngine
    _install: str
    _starting: set[UUID]
    _reader: HandleReader
    _peaks: PeakMemory
    orphan_age: float

    # --- remove / cleanup -------------------------------------------------------------

    async def remove(self, conversation_id: UUID) -> bool:
        self._reader.claimed.pop(conversation_id, None)
        self._peaks.forget(conversation_id)
        return await self._remove(conversation_id)

    async def _remove(self, conversation_id: UUID) -> bool:
        """Both services, then the configs and the network once no task holds them (the
        manager refuses while a task still shuts down). Bounded: what a task on a lost node
        still holds is left to cleanup_orphans(), once the node is back or removed."""
        names = scfg.Names.of(self._install, conversation_id)
        deadline = time.monotonic() + RELEASE_WAIT
        running, stranded = await self._tasks_of(conversation_id)
        services = await asyncio.gather(
            self._engine.remove_service(names.sandbox), self._engine.remove_service(names.relay)
        )
        await self._stopped(running, deadline)
        if stranded:  # its node will not let go of the network before it is back: no waiting
            deadline = time.monotonic()
        others = [False]
        for name, remover in (
            (names.token_config, self._engine.remove_config),
            (names.claim_config, self._engine.remove_config),
            (names.paused_config, self._engine.remove_config),
            (names.network, self._engine.remove_network),
        ):
            while True:
                try:
                    others.append(await remover(name))
                    break
                except EngineError as error:
                    if time.monotonic() > deadline:
                        log.info("swarm: %s left to the orphan clean-up: %s", name, error)
                        break
                    await asyncio.sleep(0.2)
        return any(services) or any(others)

    async def _tasks_of(self, conversation_id: UUID) -> tuple[builtins.list[str], bool]:
        """The ids of its tasks that run on a node the manager still hears from, and whether
        any is on a node it does not (down, disconnected, gone)."""
        filters = cfg.install_filter(self._install, **{cfg.CONVERSATION_ID: str(conversation_id)})
        tasks, nodes = await asyncio.gather(self._engine.tasks(filters), self._engine.nodes())
        ready = {node["ID"] for node in nodes if (node.get("Status") or {}).get("State") == "ready"}
        live = [task for task in tasks if (task.get("Status") or {}).get("State") not in ENDED]
        running = [task["ID"] for task in live if task.get("NodeID") in ready]
        return running, any(task.get("NodeID") and task["NodeID"] not in ready for task in live)

    async def _stopped(self, task_ids: builtins.list[str], deadline: float) -> None:
        """Until those tasks have stopped (so a removed sandbox's agent answers no more), or
        ``deadline``: the node's agent stops them once the manager has removed the service."""
        while task_ids and time.monotonic() < deadline:
            try:
                tasks = await self._engine.tasks({"id": task_ids})
            except EngineError:
                return
            if all((task.get("Status") or {}).get("State") in ENDED for task in tasks):
                return
            await asyncio.sleep(0.1)

    async def cleanup_orphans(self) -> int:
        """Conversations whose sandbox ended, lost its relay or its node; configs and networks
        of the installation no service owns. Leaves alone what is being started."""
        removed = 0
        world = await read_world(self._engine, cfg.install_filter(self._install))
        for conversation in list(world.services):
            if conversation in self._starting:
                continue
            handle = self._reader.handle(world, conversation, self._starting)
            sandbox = world.services[conversation].get(cfg.SANDBOX)
            half_made = handle is None and not young((sandbox or {}).get("CreatedAt"), self.orphan_age)
            ended = handle is not None and handle.state is SandboxState.EXITED
            if half_made or (ended and conversation in self._reader.listed_exited):
                await quietly(self._remove(conversation))
                removed += 1
        configs, networks = await asyncio.gather(
            self._engine.configs(cfg.install_filter(self._install)),
            self._engine.networks(cfg.install_filter(self._install)),
        )
        for item, remover in [
            *((c, self._engine.remove_config) for c in configs),
            *((n, self._engine.remove_network) for n in networks),
        ]:
            spec = item.get("Spec") or item
            owner = conversation_of(spec.get("Labels"))
            if owner is None or owner in world.services or owner in self._starting:
                continue
            if young(item.get("CreatedAt") or item.get("Created"), self.orphan_age):
                continue
            removed += int(bool(await quietly(remover(spec.get("Name") or item["Name"]))))
        return removed
