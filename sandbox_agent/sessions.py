"""``Session``: every process of one terminal's session, ended together.

A terminal's shell runs with job control: each pipeline it starts (``sleep 300 &``)
gets a process group of its own, so ending the leader's group would leave its jobs
behind. What they share is the session the terminal's leader created (sid = the
leader's pid), which a process leaves only by calling ``setsid`` itself. So the
members are found by their session id in ``/proc`` (scanned in a worker thread),
and each is signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from sandbox_agent.proctable import processes


def members(sid: int) -> list[int]:
    """The pids of the session's processes that are not zombies (blocking: reads /proc)."""
    return [pid for pid, proc in processes().items() if proc.sid == sid and not proc.zombie]


def _signal_all(sid: int, signum: int) -> int:
    """Signal every member; answers how many there were (blocking: reads /proc)."""
    pids = members(sid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return len(pids)


class Session:
    def __init__(self, sid: int, grace: float) -> None:
        self.sid = sid
        self.grace = grace

    async def hang_up(self) -> None:
        """SIGHUP to every member: what a closed terminal sends, what an interactive shell obeys."""
        await asyncio.to_thread(_signal_all, self.sid, signal.SIGHUP)

    async def terminate(self) -> None:
        """SIGTERM to every member; SIGKILL to whoever is left after the grace period."""
        if not await asyncio.to_thread(_signal_all, self.sid, signal.SIGTERM):
            return
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.grace
            while loop.time() < deadline:
                await asyncio.sleep(0.05)
                if not await asyncio.to_thread(members, self.sid):
                    return
        finally:
            # also when cancelled while waiting: nothing outlives its terminal
            _signal_all(self.sid, signal.SIGKILL)
