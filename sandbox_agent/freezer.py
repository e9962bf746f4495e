"""Freezing a sandbox from inside: every process the agent started stops; the agent answers on.

For a runtime whose engine cannot freeze a sandbox (the swarm runtime: a manager
cannot pause a task), ``POST /freeze`` and ``POST /thaw`` (gateway only, never
proxied). Contracts:

- :meth:`Freezer.freeze` sends SIGSTOP (which cannot be caught or ignored) to every
  process of the agent's family: its descendants, found through their parent pids
  in ``/proc`` (tasks and terminals lead sessions and groups of their own), and
  any process left in one of their sessions or groups whose parent has gone (a
  daemon reparented to init). It answers once each is really stopped (the kernel
  delivers a signal when the process next runs), repeating the scan until it
  finds nothing still running (a process that forked before its stop is caught
  with its child), or after :data:`STOP_WAIT` seconds, saying how many it could
  not stop. In-process runnables (the Ticker) wait on :attr:`Freezer.thawed`.
- :meth:`Freezer.thaw` sends SIGCONT to the same family and lets the in-process
  runnables go on. Both are idempotent; a lock keeps them from interleaving.
- The agent itself never stops: it keeps answering, so thawing works, and a
  request that reaches a frozen sandbox is served (its tasks just make no progress).
- Limits, as on the process runtime: a process that calls ``setsid`` and whose
  parent exits before the freeze has left every trace of the agent and runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

from sandbox_agent.proctable import Proc, processes

#: Seconds :meth:`Freezer.freeze` waits for the kernel to have stopped every process.
STOP_WAIT = 5.0
#: /proc states of a process that makes no progress: stopped, traced, zombie, dead.
_STOPPED = frozenset({"T", "t", "Z", "X", "x"})


def family(root: int, table: dict[int, Proc]) -> dict[int, Proc]:
    """The processes of ``root``'s family (``root`` itself not included): see the module."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child != root:
                found.add(child)
                stack.append(child)
    own = table.get(root)
    mine = {own.pgrp, own.sid} if own else set()
    # Sessions and groups its descendants lead (never the agent's own: it may share them).
    led = {pid for pid in found if table[pid].pgrp == pid or table[pid].sid == pid} - mine
    for pid, proc in table.items():
        if pid != root and (proc.pgrp in led or proc.sid in led):
            found.add(pid)
    return {pid: table[pid] for pid in found}


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop_family(root: int, wait: float = STOP_WAIT) -> tuple[int, int]:
    """SIGSTOP ``root``'s family until none of it runs; ``(stopped, still running)`` (blocking)."""
    deadline = time.monotonic() + wait
    while True:
        members = family(root, processes())
        running = [pid for pid, proc in members.items() if proc.state not in _STOPPED]
        if not running or time.monotonic() >= deadline:
            return len(members) - len(running), len(running)
        _signal(running, signal.SIGSTOP)
        time.sleep(0.005)  # run in a thread: nothing to await


def continue_family(root: int) -> int:
    """SIGCONT ``root``'s family; how many processes it has (blocking)."""
    members = list(family(root, processes()))
    _signal(members, signal.SIGCONT)
    return len(members)


@dataclass(frozen=True)
class FreezeReport:
    """What a freeze or thaw did: the processes it reached, and those it could not stop."""

    frozen: bool
    processes: int
    unstopped: int = 0


class Freezer:
    def __init__(self) -> None:
        self.frozen = False
        #: Set while not frozen: in-process runnables wait on it between steps.
        self.thawed = asyncio.Event()
        self.thawed.set()
        self._lock = asyncio.Lock()

    async def freeze(self) -> FreezeReport:
        async with self._lock:
            self.frozen = True
            self.thawed.clear()
            stopped, running = await asyncio.to_thread(stop_family, os.getpid())
            return FreezeReport(True, stopped + running, running)

    async def thaw(self) -> FreezeReport:
        async with self._lock:
            reached = await asyncio.to_thread(continue_family, os.getpid())
            self.frozen = False
            self.thawed.set()
            return FreezeReport(False, reached)
