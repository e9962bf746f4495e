"""A task's processes as the agent handles them: their process group ended (SIGTERM, a grace,
SIGKILL), and the exits of the children asyncio spawns (terminals) heard from pidfds.

- :func:`use_pidfd_exits`: on Python 3.11, the agent's own process learns the exits of the
  children asyncio spawns from pidfds in its one event loop (see the function). Tasks' own
  processes are reaped by :mod:`sandbox_agent.runnables.child`, with pidfds of its own.
- :class:`ProcessGroup`: every member of a task's group, ended; only once none is left
  (zombies aside) does :meth:`ProcessGroup.terminate` return early.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import warnings

from sandbox_agent.proctable import processes

_pidfd_watcher_set = False
_pidfd_watcher_wanted = False


def use_pidfd_exits() -> None:
    """Called by the agent's own process (``python -m sandbox_agent``), which runs one event
    loop for its whole life. Agents served inside another program (the memory runtime, tests)
    keep asyncio's default watcher: a pidfd watcher is bound to one loop, and a process-wide
    one bound to the first would never hear of the children of any later loop."""
    global _pidfd_watcher_wanted
    _pidfd_watcher_wanted = True


def watch_exits_with_pidfds(loop: asyncio.AbstractEventLoop) -> None:
    """On Python 3.11, learn a child's exit from a pidfd in the event loop instead of the
    default watcher's thread per child (a thread start and a wake-up on every task). 3.12
    does this by itself; a kernel or sandbox without ``pidfd_open`` keeps the default. Only
    after :func:`use_pidfd_exits`."""
    global _pidfd_watcher_set
    if not _pidfd_watcher_wanted or _pidfd_watcher_set or sys.version_info >= (3, 12):
        return
    _pidfd_watcher_set = True
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)  # the agent's one loop, for its whole life
        asyncio.set_child_watcher(watcher)


class ProcessGroup:
    """The process group a task's leader created (pgid = leader pid)."""

    def __init__(self, pgid: int, grace: float) -> None:
        self.pgid = pgid
        self.grace = grace

    async def terminate(self) -> None:
        """SIGTERM to every member; SIGKILL to whoever is left after the grace period."""
        if self._empty() or not await asyncio.to_thread(self.alive):
            return
        self._signal(signal.SIGTERM)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.grace
            while loop.time() < deadline:
                await asyncio.sleep(0.05)
                if not await asyncio.to_thread(self.alive):
                    return
        finally:
            # also when cancelled while waiting: nothing outlives its task
            self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)

    def _empty(self) -> bool:
        """Whether the group has no member at all (one signal-0 syscall: the common case of a
        leader that exited alone is known without the worker thread that :meth:`alive` needs)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def alive(self) -> bool:
        """Whether a member that is not a zombie is left (zombies wait for their reaper)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return any(proc.pgrp == self.pgid and not proc.zombie for proc in processes().values())
