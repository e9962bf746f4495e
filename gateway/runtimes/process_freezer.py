"""Freezing a local agent and everything it started: SIGSTOP and SIGCONT (blocking; run in threads).

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

import signal

from gateway.runtimes import procfs


def freeze(agent: procfs.ProcessId) -> None:
    """SIGSTOP the agent's group first (it starts nothing more), then its descendants'."""
    procfs.signal_group(agent, signal.SIGSTOP)
    for process in procfs.descendants(agent.pid):
        procfs.signal_group(process, signal.SIGSTOP)


def thaw(agent: procfs.ProcessId) -> None:
    """SIGCONT the descendants' groups, then the agent's: its tasks run when it does."""
    for process in procfs.descendants(agent.pid):
        procfs.signal_group(process, signal.SIGCONT)
    procfs.signal_group(agent, signal.SIGCONT)
