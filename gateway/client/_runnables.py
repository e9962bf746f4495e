"""What a task runs: :func:`shell` and :func:`python` build the sandbox's runnables.

Plain constructors of the protocol's ``Shell`` and ``Python`` models with the client's
keyword defaults; starting one is :mod:`gateway.client._tasks`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sandbox_agent.protocol import Python, Shell


def shell(
    command: str | Sequence[str],
    *,
    cwd: str = ".",
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    idle_timeout: float | None = None,
    stdin: bool = False,
) -> Shell:
    """A ``Shell`` runnable: a string runs under ``/bin/sh -c``, a sequence is an argv.
    ``stdin`` keeps its stdin open for :meth:`~gateway.client.AsyncTaskRun.write_stdin`."""
    argv: str | list[str] = command if isinstance(command, str) else list(command)
    return Shell(
        command=argv, cwd=cwd, env=dict(env or {}), timeout=timeout, idle_timeout=idle_timeout, stdin=stdin
    )


def python(
    code: str,
    *,
    cwd: str = ".",
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    idle_timeout: float | None = None,
    stdin: bool = False,
) -> Python:
    """A ``Python`` runnable: ``code`` run by a separate interpreter in the sandbox.
    ``stdin`` keeps its stdin open for :meth:`~gateway.client.AsyncTaskRun.write_stdin`."""
    return Python(
        code=code, cwd=cwd, env=dict(env or {}), timeout=timeout, idle_timeout=idle_timeout, stdin=stdin
    )
