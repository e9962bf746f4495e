"""Runnables: what a task runs. One module per runnable type.

Each module exposes ``async def run(runnable, context) -> Outcome``. A runner
emits its events through ``context.emit``; it returns an :class:`Outcome`
(``error`` set means the task ends in ERROR) and, when cancelled, cleans up
(ends its processes) before letting ``CancelledError`` through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel

from sandbox_agent.settings import AgentSettings

if TYPE_CHECKING:
    from sandbox_agent.stdin import TaskStdin


@dataclass
class Outcome:
    exit_code: int | None = None
    error: str | None = None


@dataclass
class TaskContext:
    """What a running task may use. ``cwd`` is already resolved inside the workspace."""

    task_id: UUID
    emit: Callable[[BaseModel], Any]
    settings: AgentSettings
    workspace_root: Path
    cwd: Path
    #: Called with (bytes produced so far, truncated?) as output arrives.
    on_output: Callable[[int, bool], None] = field(default=lambda size, truncated: None)
    #: The task's stdin, when it was started with ``"stdin": true``: the runner attaches the
    #: process's pipe once it runs and detaches it when it ends.
    stdin: TaskStdin | None = None
    #: Set while the sandbox is not frozen (``POST /freeze``): in-process runners wait on it
    #: between steps, as the processes of the others are stopped.
    thawed: asyncio.Event | None = None


Runner = Callable[[Any, TaskContext], Awaitable[Outcome]]


def runner_for(kind: str) -> Runner:
    """The ``run`` function of a runnable type (imported on first use)."""
    if kind == "Ticker":
        from sandbox_agent.runnables import ticker

        return ticker.run
    if kind == "Shell":
        from sandbox_agent.runnables import shell

        return shell.run
    if kind == "Python":
        from sandbox_agent.runnables import python

        return python.run
    raise KeyError(kind)
