"""Starting a process on a new PTY: the argv of a terminal's command, the spawn, the size.

:func:`spawn` opens a PTY pair, starts the process in a new session (``setsid``)
with the slave as its stdin, stdout, stderr and controlling terminal
(``TIOCSCTTY``, set in the child after ``setsid`` and the switch to the task
user), as the task user (:func:`sandbox_agent.privileges.task_uid`), with the task
environment (no token) plus ``TERM``, and answers the non-blocking master. The
child's ``preexec_fn`` is one ``ioctl`` (C code, no lock taken): what makes
``preexec_fn`` unsafe in a threaded process, a lock held by another thread at the
fork, cannot bite it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pwd
import struct
import termios
from pathlib import Path

from sandbox_agent.privileges import task_uid
from sandbox_agent.runnables.process import child_env
from sandbox_agent.runnables.process_group import watch_exits_with_pidfds

#: Shells that mean "this user may not log in": a terminal falls back to /bin/sh.
_NO_SHELL = ("nologin", "false")
TERM = "xterm-256color"


def login_shell() -> str:
    """The task user's login shell, or ``/bin/sh`` (blocking: reads the passwd database)."""
    uid = task_uid()
    try:
        shell = pwd.getpwuid(os.geteuid() if uid is None else uid).pw_shell
    except KeyError:
        shell = ""
    if not shell or os.path.basename(shell) in _NO_SHELL or not os.access(shell, os.X_OK):
        return "/bin/sh"
    return shell


def command_argv(command: str | list[str] | None, shell: str) -> tuple[list[str], str | None]:
    """``(argv, program)`` for a terminal's ``command`` (``program`` ``None``: ``argv[0]``).
    No command: ``shell`` as a login shell (``argv[0]`` ``-sh``, the convention every shell knows)."""
    if isinstance(command, list):
        return command, None
    if isinstance(command, str):
        return ["/bin/sh", "-c", command], None
    return [f"-{os.path.basename(shell)}"], shell


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child, after ``setsid``: make the PTY on fd 0 its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyExit(asyncio.SubprocessProtocol):
    """Says when the process exits (its output is read from the master, not from here)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def spawn(
    argv: list[str], program: str | None, cols: int, rows: int, cwd: Path
) -> tuple[int, asyncio.SubprocessTransport, PtyExit]:
    """``(master, transport, protocol)``; ``OSError`` when the program cannot be started."""
    master, slave = os.openpty()
    try:
        os.set_blocking(master, False)
        set_size(master, cols, rows)
        loop = asyncio.get_running_loop()
        watch_exits_with_pidfds(loop)
        transport, protocol = await loop.subprocess_exec(
            lambda: PtyExit(loop),
            *argv,
            executable=program,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=child_env({"TERM": TERM}),
            start_new_session=True,
            preexec_fn=_take_terminal,
            user=task_uid(),
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return master, transport, protocol
