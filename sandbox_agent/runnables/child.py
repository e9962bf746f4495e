"""A task's process as the event loop sees it: started in one synchronous call, its pipes read
by loop readers, its exit heard from a pidfd. No asyncio subprocess transport is involved: that
machinery (a transport, a protocol, a pipe-connecting task, a child watcher, a stream reader per
pipe) cost more of the agent's CPU than the spawn itself, on every task.

Contract of :func:`start`:
- One call, no ``await``: when it returns, the process exists and the caller owns it (there is
  no window in which a cancel could leave a started process unowned); ``OSError`` when it
  cannot be started (nothing is left open then).
- The spawn is :class:`subprocess.Popen`'s: ``vfork`` + exec where no uid change is needed (the
  process runtime); where the task must become the sandbox user (a Docker sandbox:
  ``user=task_uid()``, see :mod:`sandbox_agent.privileges`), ``vfork`` + exec of the bundle's
  uid-dropping helper, which execs the task (:mod:`sandbox_agent.runnables.drop`), or Popen's
  ``fork`` path where the helper is missing. The child starts a new session,
  changes to ``cwd``, gets ``pass_fds`` and nothing else of the agent's descriptors, and the
  program is looked up on the ``PATH`` of ``env`` (as asyncio's subprocess did: it is Popen too).
  Why not ``os.posix_spawn``: it cannot change the directory (Python 3.11 has no chdir file
  action, and a ``chdir`` of the agent itself would move every worker thread's relative paths
  too), and it measured within 0.07 ms of Popen's vfork path. Why not ``vfork`` with Popen's
  ``user=``: glibc's setuid signals every thread of the parent, whose memory a vfork child
  shares. Why not ``setpriv`` as the helper: it measured no cheaper than ``fork`` (the kernel
  runs it in secure mode, glibc's start-up and its libraries cost 2 ms more, and secure mode
  strips ``LD_*``, ``TMPDIR`` and the like from the task's environment); the bundle's helper
  has no C library, so neither applies.
- stdout and stderr are pipes read here (:class:`Pump`); stdin is ``/dev/null`` or a pipe whose
  write end the caller gets.
- :attr:`Child.exited` resolves once the process has exited and been reaped; then
  :attr:`Child.returncode` is its exit code (negative: the signal that ended it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable

from sandbox_agent.privileges import task_uid
from sandbox_agent.runnables import drop

#: ``Pump`` hands each chunk here; a returned awaitable pauses reading until it is done.
Consumer = Callable[[bytes], Awaitable[None] | None]


class Child:
    """A started process: its pid, its stdin's write end (or ``None``) and its exit."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: int | None) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfds here: a thread waits, as asyncio's default does
            threading.Thread(target=self._wait_in_thread, args=(loop,), daemon=True).start()
            return
        loop.add_reader(pidfd, self._reap, pidfd)

    def _reap(self, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)  # a zombie by now: no wait
        self._exited(os.waitstatus_to_exitcode(status))

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        _, status = os.waitpid(self.pid, 0)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(self._exited, os.waitstatus_to_exitcode(status))

    def _exited(self, code: int) -> None:
        self.returncode = self._popen.returncode = code  # reaped here: Popen must not wait again
        if not self.exited.done():
            self.exited.set_result(None)


def start(
    argv: list[str], *, cwd: str, env: dict[str, str], stdin_pipe: bool, pass_fds: tuple[int, ...]
) -> tuple[Child, int, int]:
    """Start ``argv`` (module docstring); returns the child and the read ends of its stdout
    and stderr (non-blocking, the caller's to close)."""
    fds: list[int] = []
    try:
        out_r, out_w = _pipe(fds)
        err_r, err_w = _pipe(fds)
        in_r, in_w = _pipe(fds) if stdin_pipe else (_devnull(), None)
        popen = drop.popen(
            argv,
            user=task_uid(),
            pass_fds=pass_fds,
            stdin=in_r,
            stdout=out_w,
            stderr=err_w,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    for fd in (out_w, err_w, *([in_r] if stdin_pipe else [])):
        os.close(fd)  # the child's ends: the parent keeps none of them
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    return Child(popen, in_w), out_r, err_r


@functools.cache
def _devnull() -> int:
    """``/dev/null``, opened once for every task's stdin (Popen's ``DEVNULL`` opens and closes
    it on every start); close-on-exec here, a child gets it as its stdin only."""
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def _pipe(opened: list[int]) -> tuple[int, int]:
    read_end, write_end = os.pipe()  # close-on-exec: only what Popen hands over reaches the child
    opened += [read_end, write_end]
    return read_end, write_end


class Pump:
    """Reads one pipe to its end with a loop reader and hands every chunk to ``consume`` in
    order. While an awaitable that ``consume`` returned runs, the pipe is not read (so the
    writer is held back, never buffered without bound here). :attr:`done` resolves at the end
    of the pipe once the last chunk is consumed; :meth:`close` stops reading at once."""

    def __init__(self, fd: int, chunk: int, consume: Consumer) -> None:
        self._fd = fd
        self._chunk = chunk
        self._consume = consume
        self._loop = asyncio.get_running_loop()
        self._slow: asyncio.Future[None] | None = None
        self._closed = False
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, self._chunk)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        pending = self._consume(data)
        if pending is not None:
            self._loop.remove_reader(self._fd)
            self._slow = asyncio.ensure_future(pending)
            self._slow.add_done_callback(self._resume)

    def _resume(self, slow: asyncio.Future[None]) -> None:
        self._slow = None
        if not slow.cancelled() and slow.exception() is not None:
            self.close()  # the sink raised: stop reading; run_process reports the task's end
        elif not self._closed:
            self._loop.add_reader(self._fd, self._readable)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        if self._slow is not None:
            self._slow.cancel()
        if not self.done.done():
            self.done.set_result(None)
