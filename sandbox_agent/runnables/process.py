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

How the process is started, read and reaped: :mod:`sandbox_agent.runnables.child`; how its
group is ended: :mod:`sandbox_agent.runnables.process_group`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

from sandbox_agent.protocol import AGENT_TOKEN_ENV
from sandbox_agent.runnables import Outcome, TaskContext
from sandbox_agent.runnables.child import Child, Pump, start
from sandbox_agent.runnables.oom import KILLED_CODES, oom_error, oom_kills
from sandbox_agent.runnables.output import OutputSink, Stream
from sandbox_agent.runnables.process_group import ProcessGroup, use_pidfd_exits

__all__ = ["HIDDEN_ENV", "ProcessGroup", "child_env", "run_process", "use_pidfd_exits"]

#: Environment variables never passed to a task.
HIDDEN_ENV = (AGENT_TOKEN_ENV,)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The agent's environment without :data:`HIDDEN_ENV`, plus ``extra``."""
    return _inherited() | extra


#: (the raw environment it was made from, the inherited environment).
_inherited_cache: tuple[tuple[tuple[bytes, bytes], ...], dict[str, str]] | None = None


def _inherited() -> dict[str, str]:
    """The agent's environment without :data:`HIDDEN_ENV`, made again only when the environment
    changed: decoding ``os.environ`` item by item cost some 50 us on every task's start, while
    a snapshot of its raw ``bytes`` items, to compare with the last one, is a copy in C."""
    global _inherited_cache
    raw = getattr(os.environ, "_data", None)  # CPython's bytes -> bytes store behind os.environ
    if not isinstance(raw, dict):
        return {key: value for key, value in os.environ.items() if key not in HIDDEN_ENV}
    snapshot = tuple(raw.items())
    if _inherited_cache is None or _inherited_cache[0] != snapshot:
        env = {key: value for key, value in os.environ.items() if key not in HIDDEN_ENV}
        _inherited_cache = (snapshot, env)
    return _inherited_cache[1]


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
    try:
        oom_before = oom_kills(context.settings)
        child, out_fd, err_fd = start(
            argv,
            cwd=str(context.cwd),
            env=child_env(context.settings.task_env | env),
            stdin_pipe=stdin_data is not None or open_stdin is not None,
            pass_fds=pass_fds,
        )
    except BaseException as error:  # cannot start (or a bad argv or env: an internal error)
        if open_stdin is not None:
            open_stdin.detach()  # a writer waiting for the process learns it will not run
        if not isinstance(error, OSError):
            raise
        return Outcome(exit_code=127, error=f"cannot start {argv[0]!r}: {error.strerror or error}")
    finally:
        for fd in pass_fds:
            os.close(fd)
    # From here on the process exists: every way out ends its group (no await came before).
    group = ProcessGroup(child.pid, context.settings.kill_grace_seconds)
    sink = OutputSink(context)
    last_output = [loop.time()]
    chunk = context.settings.output_chunk_bytes
    pumps = [
        Pump(out_fd, chunk, _consumer("stdout", sink, last_output)),
        Pump(err_fd, chunk, _consumer("stderr", sink, last_output)),
    ]
    stdin_writer: asyncio.StreamWriter | None = None
    feeder = None
    reason = None
    try:
        stdin_writer = await _stdin_writer(child)
        if open_stdin is not None and stdin_writer is not None:
            open_stdin.attach(stdin_writer)
        if stdin_data is not None and stdin_writer is not None:
            feeder = asyncio.create_task(_feed(stdin_writer, stdin_data))
        reason = await _supervise(child.exited, timeout, idle_timeout, last_output)
        if reason is not None:
            await group.terminate()
        await child.exited
        await group.terminate()  # leftovers of a leader that exited
        # Output still in the pipes is read to the end; a process that escaped the
        # group (setsid) and holds them open does not keep the task alive. (Mostly the
        # pipes' ends were read with the exit, in the same loop turn: no wait then.)
        if not all(pump.done.done() for pump in pumps):
            await asyncio.wait(
                [pump.done for pump in pumps], timeout=context.settings.kill_grace_seconds + 1.0
            )
    except asyncio.CancelledError:
        await group.terminate()
        raise
    finally:
        if open_stdin is not None:
            open_stdin.detach()
        if feeder is not None:
            feeder.cancel()
        for pump in pumps:
            pump.close()
        if stdin_writer is not None:
            stdin_writer.close()
        await sink.close()
    return _outcome(child, reason, oom_before, context)


def _consumer(
    stream: Stream, sink: OutputSink, last_output: list[float]
) -> Callable[[bytes], Awaitable[None] | None]:
    """What a pump hands its chunks to: the sink, at once while they fit in its budget."""
    loop = asyncio.get_running_loop()

    def consume(data: bytes) -> Awaitable[None] | None:
        last_output[0] = loop.time()
        return None if sink.write_nowait(stream, data) else sink.write(stream, data)

    return consume


async def _stdin_writer(child: Child) -> asyncio.StreamWriter | None:
    """The child's stdin pipe as a stream writer (``None``: its stdin is ``/dev/null``)."""
    if child.stdin is None:
        return None
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(child.stdin, "wb", buffering=0)
    try:
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    except BaseException:
        pipe.close()
        raise
    return asyncio.StreamWriter(transport, protocol, None, loop)


def _outcome(child: Child, reason: str | None, oom_before: int | None, context: TaskContext) -> Outcome:
    returncode = child.returncode
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
            # Awaited directly (no asyncio.wait): a cancel cancels ``exited`` too, which
            # only the run being cancelled waits for (the exit itself is still reaped).
            await exited
            return None
        delay, why = min(limits)
        if delay <= 0:
            return why
        done, _ = await asyncio.wait({exited}, timeout=delay)
        if done:
            return None


async def _feed(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(ConnectionError, BrokenPipeError):
        writer.write(data)
        await writer.drain()
        writer.close()
