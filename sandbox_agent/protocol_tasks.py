"""The wire's tasks: runnables, a task, and writes to a running task's stdin. Part of
:mod:`sandbox_agent.protocol`, which re-exports all of it: import from there."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

# --- tasks and runnables ----------------------------------------------------------


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.CANCELLED, TaskStatus.COMPLETED, TaskStatus.ERROR)


class Ticker(BaseModel):
    """The seed's debug task: one ``Tick`` event every ``interval`` seconds."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["Ticker"] = "Ticker"
    message: str = Field("tick", max_length=1000)
    interval: float = Field(1.0, ge=0.0, le=3600.0)
    iterations: int = Field(10, ge=1, le=1_000_000)


class _ProcessRunnable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cwd: str = Field(".", description="Working directory, relative to the workspace root.")
    env: dict[str, str] = Field(default_factory=dict)
    timeout: float | None = Field(None, gt=0, description="Seconds before the task is ended.")
    idle_timeout: float | None = Field(
        None, gt=0, description="Seconds without output before the task is ended."
    )
    stdin: bool = Field(
        False,
        description="Keep the process's stdin open (a pipe): write to it with POST .../task/{task_id}/stdin "
        'or a WebSocket frame {"stdin": ..., "task_id": ...}. Otherwise stdin is /dev/null.',
    )


class Shell(_ProcessRunnable):
    """A shell command (``/bin/sh -c``) or an argv list, in its own process group."""

    type: Literal["Shell"] = "Shell"
    command: str | list[str] = Field(min_length=1)


class Python(_ProcessRunnable):
    """Python source run by a separate interpreter process."""

    type: Literal["Python"] = "Python"
    code: str


Runnable = Annotated[Ticker | Shell | Python, Field(discriminator="type")]
RUNNABLE_TYPES: tuple[type[BaseModel], ...] = (Ticker, Shell, Python)


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runnable: Runnable
    title: str = Field("", max_length=500)


class Task(BaseModel):
    id: UUID
    title: str
    runnable: Runnable
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    output_bytes: int = 0
    output_truncated: bool = False


# --- stdin of a running task -------------------------------------------------------


class StdinFrame(BaseModel):
    """WebSocket frame: write ``stdin`` (UTF-8) to a task started with ``"stdin": true``;
    ``eof`` closes its stdin afterwards."""

    model_config = ConfigDict(extra="forbid")
    task_id: UUID
    stdin: str = ""
    eof: bool = False


class StdinWritten(BaseModel):
    """Answer of ``POST /task/{task_id}/stdin``."""

    task_id: UUID
    written: int = Field(description="Bytes written to the task's stdin by this request.")
    closed: bool = Field(description="Whether the task's stdin is now closed (eof).")


__all__ = [
    "RUNNABLE_TYPES",
    "Python",
    "Runnable",
    "Shell",
    "StdinFrame",
    "StdinWritten",
    "Task",
    "TaskCreate",
    "TaskStatus",
    "Ticker",
]
