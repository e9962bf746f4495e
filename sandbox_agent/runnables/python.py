"""Python: source code run by a separate interpreter: ``task_python`` (the image's
``python3`` in a sandbox whose agent is mounted into a template; a task without one fails with
exit 127, saying so), else the agent's own.

The code goes through a pipe rather than ``-c`` so its size is not bound by the
argv limit: stdin itself, or - when the task keeps its stdin open for the client
(``"stdin": true``) - another pipe, read by a two-line bootstrap that then runs the
code as ``__main__``. ``-u`` keeps the output unbuffered so it streams as it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from sandbox_agent.fdio import write_all
from sandbox_agent.protocol import Python
from sandbox_agent.runnables import Outcome, TaskContext
from sandbox_agent.runnables.process import run_process

#: Run the code read from the file descriptor in argv[1] as ``__main__`` (stdin stays free).
BOOTSTRAP = (
    "import os, sys\n"
    "with os.fdopen(int(sys.argv.pop(1)), 'rb') as f: source = f.read()\n"
    "sys.argv[0] = '-'\n"
    "exec(compile(source, '<stdin>', 'exec'), {'__name__': '__main__', '__builtins__': __builtins__})\n"
)


def _feed(fd: int, data: bytes) -> None:
    """Write ``data`` to the pipe and close it (blocking: run it in a thread). A child that
    is gone (EPIPE) is fine."""
    try:
        with contextlib.suppress(OSError):
            write_all(fd, data)
    finally:
        os.close(fd)


async def run(runnable: Python, context: TaskContext) -> Outcome:
    env, timeout, idle = runnable.env, runnable.timeout, runnable.idle_timeout
    if not runnable.stdin:
        return await run_process(
            [context.settings.task_python or sys.executable, "-u", "-"],
            context,
            env=env,
            timeout=timeout,
            idle_timeout=idle,
            stdin_data=runnable.code.encode(),
        )
    read_end, write_end = os.pipe()
    # Fed from a thread: the write blocks until the child reads; the read end is closed
    # here once the child has its copy, so a child that dies unblocks it (EPIPE).
    feeding = asyncio.ensure_future(asyncio.to_thread(_feed, write_end, runnable.code.encode()))
    try:
        return await run_process(
            [context.settings.task_python or sys.executable, "-u", "-c", BOOTSTRAP, str(read_end)],
            context,
            env=env,
            timeout=timeout,
            idle_timeout=idle,
            pass_fds=(read_end,),
        )
    finally:
        await asyncio.shield(feeding)
