"""Python: source code run by a separate interpreter, fed on stdin: ``task_python`` (the image's
``python3`` in a sandbox whose agent is mounted into a template; a task without one fails with
exit 127, saying so), else the agent's own.

The code goes through stdin rather than ``-c`` so its size is not bound by the
argv limit; ``-u`` keeps its output unbuffered so it streams as it is written.
"""

from __future__ import annotations

import sys

from sandbox_agent.protocol import Python
from sandbox_agent.runnables import Outcome, TaskContext
from sandbox_agent.runnables.process import run_process


async def run(runnable: Python, context: TaskContext) -> Outcome:
    return await run_process(
        [context.settings.task_python or sys.executable, "-u", "-"],
        context,
        env=runnable.env,
        timeout=runnable.timeout,
        idle_timeout=runnable.idle_timeout,
        stdin_data=runnable.code.encode(),
    )
