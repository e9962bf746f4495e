"""A task started as the sandbox user with ``vfork``: through the agent bundle's helper.

Where a task must become the sandbox user (the agent's real uid is root, its effective uid
the user's: see :mod:`sandbox_agent.privileges`), :class:`subprocess.Popen` with ``user=``
forks the agent: its page tables are copied, then every page either side writes is faulted
(copied or taken back) until the child execs, and the child's copy of the address space is
torn down at its exec. In a sandbox that cost more than the task itself (a warm ``echo hi``:
about 2.8 ms of CPU per task, fork path, against 1.2 ms this way, measured in a container).

So when the bundle carries ``libexec/convoy-drop-exec`` (built from
``images/sandbox/drop_exec.c`` by ``scripts/build-images``), the agent vforks and execs it
with ``UID GID ERRFD PROGRAM ARGS...``: it sets all three uids and gids to the user's with
raw system calls (no C library: it is the glibc ``setuid`` of a vfork child sharing the
agent's threads that was unsafe, and glibc's secure mode would strip the task's ``LD_*``
and ``TMPDIR``), then execs the program, looked up on the environment's ``PATH``. The task
ends exactly as the fork path leaves it: all uids and gids the user's, no capability (the
kernel clears the permitted set once no uid is 0). ERRFD is the write end of a
close-on-exec pipe: EOF means the program runs; an errno read from it means it could not be
exec'd (raised here as the :class:`OSError` Popen would have raised, after reaping the helper).

Contract of :func:`popen`: the :class:`subprocess.Popen` of the started task, or
:class:`OSError` when it cannot start (nothing is left running then); without the helper,
or when no uid change is needed, it is Popen's own ``user=`` path as before.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The helper's name under the bundle's ``libexec``.
HELPER_NAME = "convoy-drop-exec"


@functools.cache
def helper() -> str | None:
    """The helper's path in this interpreter's bundle (``sys.prefix``), if it is there."""
    path = Path(sys.prefix) / "libexec" / HELPER_NAME
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return str(path) if mode & 0o111 else None


def popen(
    argv: list[str], *, user: int | None, pass_fds: tuple[int, ...], **options: Any
) -> subprocess.Popen[bytes]:
    """``argv`` started as ``user`` (``None``: the agent's own); ``options`` are Popen's."""
    path = helper() if user is not None else None
    if path is None:
        return subprocess.Popen(argv, user=user, pass_fds=pass_fds, **options)
    report_r, report_w = os.pipe()  # close-on-exec here; the helper makes its copy so too
    try:
        dropping = [path, str(user), str(os.getegid()), str(report_w), *argv]
        started = subprocess.Popen(dropping, pass_fds=(*pass_fds, report_w), **options)
    except BaseException:
        os.close(report_r)
        raise
    finally:
        os.close(report_w)
    try:
        # Blocks for as long as the helper takes to exec (system calls, no waiting on
        # anyone): Popen itself waits so for its own exec, on its own pipe.
        report = _read_all(report_r)
    finally:
        os.close(report_r)
    if not report:
        return started
    started.wait()  # the helper exits at once after its report
    code = int.from_bytes(report[:4], sys.byteorder) if len(report) >= 4 else errno.EIO
    raise OSError(code, os.strerror(code), argv[0])


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 64):
        data += chunk
    return data
