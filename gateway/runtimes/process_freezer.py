"""Pausing on the process runtime: SIGSTOP and SIGCONT to a local agent and everything it started.

What pausing means on the process runtime: the agent's process group and the
group of every process it started (shell tasks lead groups of their own) get
SIGSTOP, which cannot be caught or ignored; they keep their memory and open
files, and sockets stay open (the kernel still accepts connections on the
agent's port: they wait). SIGCONT brings them back; timers that ran out while
stopped fire at once. A process that a task started meanwhile in a new session
and group of its own is found through its parent pids, like at removal.
Unlike Docker's freezer, a stopped child's parent may see it as stopped
(``waitpid`` with ``WUNTRACED``); the agent's tasks do not ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from gateway.errors import EngineNotFound, RuntimeFailure
from gateway.runtimes import process_files as files
from gateway.runtimes import procfs
from gateway.runtimes.base import SandboxHandle, SandboxState

_T = TypeVar("_T")
#: /proc states of a process that makes no progress: stopped, traced, dead (or gone: "").
_STOPPED = frozenset({"T", "t", "Z", "X", ""})


#: Seconds :func:`freeze` waits for the kernel to have stopped every signalled process.
_STOP_WAIT = 5.0


def freeze(agent: procfs.ProcessId) -> None:
    """SIGSTOP the agent's group first (it starts nothing more), then its descendants', and
    return once each is stopped (a signal is delivered when its process next runs, which
    on a loaded machine is not at once), or after :data:`_STOP_WAIT` seconds."""
    procfs.signal_group(agent, signal.SIGSTOP)
    family = [agent, *procfs.descendants(agent.pid)]
    for process in family[1:]:
        procfs.signal_group(process, signal.SIGSTOP)
    deadline = time.monotonic() + _STOP_WAIT
    while not all(procfs.state(process.pid) in _STOPPED for process in family):
        if time.monotonic() >= deadline:
            return
        time.sleep(0.005)  # run in a thread: nothing to await


def thaw(agent: procfs.ProcessId) -> None:
    """SIGCONT the descendants' groups, then the agent's: its tasks run when it does."""
    for process in procfs.descendants(agent.pid):
        procfs.signal_group(process, signal.SIGCONT)
    procfs.signal_group(agent, signal.SIGCONT)


async def _io(call: Callable[..., _T], *args: Any) -> _T:
    try:
        return await asyncio.to_thread(call, *args)
    except OSError as error:
        raise RuntimeFailure(f"the process runtime's state could not be read or written: {error}") from None


class ProcessPausing:
    """The pause block of the Runtime protocol for :class:`~gateway.runtimes.process.ProcessRuntime`
    (``"paused"`` in ``meta.json`` is the state a restarted gateway reads)."""

    def _dir(self, conversation_id: UUID) -> Path:
        raise NotImplementedError

    async def pause(self, conversation_id: UUID) -> SandboxHandle:
        return await self._set_paused(conversation_id, True)

    async def resume(self, conversation_id: UUID) -> SandboxHandle:
        return await self._set_paused(conversation_id, False)

    async def _agent(self, conversation_id: UUID) -> tuple[dict[str, Any], SandboxHandle]:
        folder = self._dir(conversation_id)
        data = await _io(files.read_meta, folder)
        handle = None if data is None else await _io(files.handle, folder, data)
        if data is None or handle is None:
            raise EngineNotFound(f"no sandbox for conversation {conversation_id}")
        return data, handle

    async def _set_paused(self, conversation_id: UUID, paused: bool) -> SandboxHandle:
        data, handle = await self._agent(conversation_id)
        if handle.state not in (SandboxState.RUNNING, SandboxState.PAUSED):
            raise RuntimeFailure(f"the sandbox of {conversation_id} is {handle.state.value}")
        agent = procfs.ProcessId(int(data["pid"]), data.get("started"))
        folder = self._dir(conversation_id)
        # Frozen before the state says so, and said before it is thawed: never PAUSED while running.
        if paused:
            await asyncio.to_thread(freeze, agent)
        await _io(files.write_meta, folder, data | {"paused": paused})
        if not paused:
            await asyncio.to_thread(thaw, agent)
        found = await _io(files.handle, folder, data | {"paused": paused})
        assert found is not None
        return found

    @contextlib.asynccontextmanager
    async def _held_still(self, conversation_id: UUID) -> AsyncIterator[None]:
        """A running agent and its tasks are paused while their workspace is copied (recorded
        in ``meta.json`` too: a gateway killed meanwhile leaves it PAUSED, not stopped unseen)."""
        _, handle = await self._agent(conversation_id)
        if handle.state is not SandboxState.RUNNING:
            yield
            return
        await self._set_paused(conversation_id, True)
        try:
            yield
        finally:
            await self._set_paused(conversation_id, False)
