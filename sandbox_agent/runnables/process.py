"""Running one process for a task: its own group, streamed output, timeouts, cancel.

Contract of :func:`run_process`:
- stdin is ``/dev/null``; the ``stdin_data`` bytes (then EOF); or, with a
  :class:`~sandbox_agent.stdin.TaskStdin` in the context, a pipe kept open for
  ``POST /task/{id}/stdin`` until an eof or the end of the process. ``pass_fds``
  are handed to the child and closed here once it started (or failed to).
- The process starts in a new session (its own process group) in the task's
  ``cwd``, with the agent's environment minus its token, plus the runnable's
  ``env``, as the sandbox user when the agent was started as root (see
  :mod:`sandbox_agent.privileges`: then it can neither read the token nor
  signal or trace the agent). stdout and stderr are read in chunks as they come and handed to an
  :class:`~sandbox_agent.runnables.output.OutputSink`.
- ``timeout`` (seconds since start) or ``idle_timeout`` (seconds without
  output) ends the task: SIGTERM to the whole group, SIGKILL after
  ``kill_grace_seconds``; the outcome is an error that says which.
- Cancellation does the same, then lets ``CancelledError`` through.
- The task ends when the group leader exits; anything it left running in its
  group is ended the same way (so no orphan keeps the pipes or the CPU).
- The exit code is the leader's (negative: killed by that signal). A SIGKILL
  that the memory cgroup counts as an OOM kill is reported as "out of memory"
  (see :mod:`sandbox_agent.runnables.oom`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Coroutine
from typing import Any

from sandbox_agent.privileges import task_uid
from sandbox_agent.protocol import AGENT_TOKEN_ENV
from sandbox_agent.runnables import Outcome, TaskContext
from sandbox_agent.runnables.oom import KILLED_CODES, oom_error, oom_kills
from sandbox_agent.runnables.output import OutputSink, Stream

#: Environment variables never passed to a task.
HIDDEN_ENV = (AGENT_TOKEN_ENV,)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in HIDDEN_ENV}
    env.update(extra)
    return env


async def run_process(
    argv: list[str],
    context: TaskContext,
    *,
    env: dict[str, str],
    timeout: float | None,  # noqa: ASYNC109 - the task's limit, enforced with its idle twin below
    idle_timeout: float | None,
    stdin_data: bytes | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Outcome:
    loop = asyncio.get_running_loop()
    open_stdin = context.stdin
    _watch_exits_with_pidfds(loop)
    try:
        oom_before = oom_kills(context.settings)
        spawn = loop.subprocess_exec(
            lambda: _Protocol(loop),
            *argv,
            cwd=context.cwd,
            env=child_env(context.settings.task_env | env),
            stdin=subprocess.PIPE if stdin_data is not None or open_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            user=task_uid(),
            pass_fds=pass_fds,
        )
        transport, protocol = await _spawned(spawn, context.settings.kill_grace_seconds)
    except BaseException as error:  # cannot start, or cancelled (its process already ended)
        if open_stdin is not None:
            open_stdin.detach()  # a writer waiting for the process learns it will not run
        if not isinstance(error, OSError):
            raise
        return Outcome(exit_code=127, error=f"cannot start {argv[0]!r}: {error.strerror or error}")
    finally:
        for fd in pass_fds:
            os.close(fd)
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    if open_stdin is not None and proc.stdin is not None:
        open_stdin.attach(proc.stdin)
    group = ProcessGroup(proc.pid, context.settings.kill_grace_seconds)
    sink = OutputSink(context)
    last_output = [loop.time()]
    chunk = context.settings.output_chunk_bytes
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        asyncio.create_task(_pump(proc.stdout, "stdout", sink, last_output, chunk)),
        asyncio.create_task(_pump(proc.stderr, "stderr", sink, last_output, chunk)),
    ]
    feeder = None
    if stdin_data is not None and proc.stdin is not None:
        feeder = asyncio.create_task(_feed(proc.stdin, stdin_data))
    try:
        reason = await _supervise(protocol.exited, timeout, idle_timeout, last_output)
        if reason is not None:
            await group.terminate()
        await protocol.exited
        await group.terminate()  # leftovers of a leader that exited
        # Output still in the pipes is read to the end; a process that escaped the
        # group (setsid) and holds them open does not keep the task alive.
        await asyncio.wait(pumps, timeout=context.settings.kill_grace_seconds + 1.0)
    except asyncio.CancelledError:
        await group.terminate()
        raise
    finally:
        if open_stdin is not None:
            open_stdin.detach()
        for helper in [*pumps, *([feeder] if feeder else [])]:
            helper.cancel()
        transport.close()
        await sink.close()
    returncode = transport.get_returncode()
    assert returncode is not None
    if reason is not None:
        return Outcome(exit_code=returncode, error=reason)
    if returncode == 0:
        return Outcome(exit_code=0)
    if returncode in KILLED_CODES and oom_before is not None:
        oom_after = oom_kills(context.settings)
        if oom_after is not None and oom_after > oom_before:
            return Outcome(exit_code=returncode, error=oom_error(returncode))
    if returncode < 0:
        return Outcome(exit_code=returncode, error=f"killed by signal {-returncode}")
    return Outcome(exit_code=returncode, error=f"exited with code {returncode}")


async def _spawned(
    spawn: Coroutine[Any, Any, tuple[asyncio.SubprocessTransport, _Protocol]], grace: float
) -> tuple[asyncio.SubprocessTransport, _Protocol]:
    """The spawned process, shielded from a cancel that races it.

    A spawn cancelled once the process exists would kill the leader alone, and a
    background child it had forked already would outlive the task. So the spawn
    runs to its end; when the caller was cancelled meanwhile, the new process group
    (the leader's session) is ended as any cancelled task's is, then the cancel goes on.
    """
    spawning = asyncio.ensure_future(spawn)
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        while not spawning.done():
            with contextlib.suppress(asyncio.CancelledError):  # one cancel is enough: it goes on below
                await asyncio.shield(spawning)
        if spawning.cancelled() or spawning.exception() is not None:
            raise  # no process was made
        transport, _ = spawning.result()
        try:
            await ProcessGroup(transport.get_pid(), grace).terminate()
        finally:
            transport.close()
        raise


_pidfd_watcher_set = False
_pidfd_watcher_wanted = False


def use_pidfd_exits() -> None:
    """Called by the agent's own process (``python -m sandbox_agent``), which runs one event
    loop for its whole life. Agents served inside another program (the memory runtime, tests)
    keep asyncio's default watcher: a pidfd watcher is bound to one loop, and a process-wide
    one bound to the first would never hear of the children of any later loop."""
    global _pidfd_watcher_wanted
    _pidfd_watcher_wanted = True


def _watch_exits_with_pidfds(loop: asyncio.AbstractEventLoop) -> None:
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


async def _supervise(
    exited: asyncio.Future[None],
    timeout: float | None,  # noqa: ASYNC109 - see run_process
    idle_timeout: float | None,
    last_output: list[float],
) -> str | None:
    """Wait for the leader; returns why it must be ended, or ``None`` when it exited."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        limits: list[tuple[float, str]] = []
        now = loop.time()
        if timeout is not None:
            limits.append((started + timeout - now, f"timed out after {timeout:g}s"))
        if idle_timeout is not None:
            limits.append((last_output[0] + idle_timeout - now, f"no output for {idle_timeout:g}s"))
        if not limits:
            await asyncio.wait({exited})
            return None
        delay, why = min(limits)
        if delay <= 0:
            return why
        done, _ = await asyncio.wait({exited}, timeout=delay)
        if done:
            return None


async def _pump(
    reader: asyncio.StreamReader, stream: Stream, sink: OutputSink, last_output: list[float], chunk: int
) -> None:
    loop = asyncio.get_running_loop()
    while data := await reader.read(chunk):
        last_output[0] = loop.time()
        await sink.write(stream, data)


async def _feed(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(ConnectionError, BrokenPipeError):
        writer.write(data)
        await writer.drain()
        writer.close()


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also says when the process exits.

    ``Process.wait()`` (Python 3.11) answers only once every pipe is closed, which a
    background child holding stdout can delay forever; ``exited`` does not wait for that.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


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
        try:
            pids = [name for name in os.listdir("/proc") if name.isdigit()]
        except OSError:
            return True
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as file:
                    fields = file.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # fields after "comm)": state, ppid, pgrp, ...
            if len(fields) > 2 and int(fields[2]) == self.pgid and fields[0] != b"Z":
                return True
        return False
