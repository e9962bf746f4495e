"""Shell: a ``/bin/sh -c`` command, or an argv list run directly, in its own process group."""

from __future__ import annotations

from sandbox_agent.protocol import Shell
from sandbox_agent.runnables import Outcome, TaskContext
from sandbox_agent.runnables.process import run_process


async def run(runnable: Shell, context: TaskContext) -> Outcome:
    argv = ["/bin/sh", "-c", runnable.command] if isinstance(runnable.command, str) else runnable.command
    return await run_process(
        argv, context, env=runnable.env, timeout=runnable.timeout, idle_timeout=runnable.idle_timeout
    )
