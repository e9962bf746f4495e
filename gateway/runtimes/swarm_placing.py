"""How a swarm start waits for the scheduler and the relay, and why it failed (a mixin of
:class:`~gateway.runtimes.swarm.SwarmRuntime`, whose ``_start`` uses it)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any
from uuid import UUID

from gateway.errors import RuntimeFailure, SandboxStartError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes import swarm_config as scfg
from gateway.runtimes import swarm_state
from gateway.runtimes.base import SandboxHandle, SandboxState
from gateway.runtimes.swarm_engine import SwarmEngine


class SwarmPlacing:
    """The waits of a start: placement, a free port, the relay's URL, the sandbox alive."""

    _engine: SwarmEngine
    _install: str
    _start_timeout: float
    _ports: range

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        raise NotImplementedError

    async def _placed(self, names: scfg.Names, began: float) -> tuple[str, str]:
        """The node the scheduler placed the sandbox's task on, and its address on its network."""
        while True:
            tasks = await self._engine.tasks({"service": [names.sandbox]})
            task = swarm_state.latest(tasks)
            state = ((task or {}).get("Status") or {}).get("State")
            address = scfg.task_address(task, names.network) if task else None
            if task and task.get("NodeID") and address:
                return str(task["NodeID"]), address
            if state in ("failed", "rejected", "shutdown", "complete", "orphaned"):
                raise SandboxStartError("the sandbox's task ended before it ran")
            if time.monotonic() - began > self._start_timeout:
                pending = ((task or {}).get("Status") or {}).get("Err") or state or "no task"
                raise SandboxStartError(
                    f"the scheduler did not place the sandbox within {self._start_timeout:g}s: {pending}"
                )
            await asyncio.sleep(0.05)

    async def _free_port(self) -> int:
        """A host port for the relay no other relay of the installation publishes."""
        taken = {
            scfg.published_port(service)
            for service in await self._engine.services(
                cfg.install_filter(self._install, **{cfg.ROLE: cfg.RELAY})
            )
        }
        while True:
            port = random.choice(self._ports)
            if port not in taken:
                return port

    async def _wait_url(self, conversation_id: UUID, began: float) -> str:
        while True:
            handle = await self.find(conversation_id)
            if handle is not None and handle.state is SandboxState.EXITED:
                raise SandboxStartError(handle.reason or "the sandbox ended before it was ready")
            if handle is not None and handle.base_url:
                return handle.base_url
            if time.monotonic() - began > self._start_timeout:
                raise SandboxStartError(f"the relay got no address within {self._start_timeout:g}s")
            await asyncio.sleep(0.05)

    def _alive(self, conversation_id: UUID) -> Any:
        asked_at, alive_now = 0.0, True

        async def alive() -> bool:
            nonlocal asked_at, alive_now
            if time.monotonic() - asked_at >= 0.25:
                handle = await self.find(conversation_id)
                asked_at = time.monotonic()
                alive_now = handle is not None and handle.state is not SandboxState.EXITED
            return alive_now

        return alive

    async def _failure_reason(self, conversation_id: UUID, names: scfg.Names, error: str) -> str:
        try:
            handle = await self.find(conversation_id)
            if handle is not None and handle.reason and handle.reason not in error:
                error = f"{error}: {handle.reason}"
            async with asyncio.timeout(5):
                tail = (await self._engine.service_logs(names.sandbox, 20)).strip()
        except (RuntimeFailure, TimeoutError):
            tail = ""
        return f"{error}\nlast log lines:\n{tail}" if tail else error
