"""What crosses the wire: the one definition shared by the agent, the gateway and the client.

The agent serves the per-conversation routes without the ``/conversation/{id}``
prefix; the gateway serves them with it and re-exposes these models so its
OpenAPI and AsyncAPI documents are complete.

Every event is an :class:`Event` envelope. ``seq`` is per conversation, starts
at 1, is gapless and monotonic, and is what a client resumes from
(``after_seq``). Status frames that the gateway sends before a sandbox exists
(STARTING phases, a start-up ERROR) carry ``seq`` 0: they are not part of any
event log and cannot be replayed.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

# The names both sides agree on are written once, in sandbox_agent.contract; they are part of
# the protocol, so everything it exports is re-exported here.
from sandbox_agent.contract import *  # noqa: F403
from sandbox_agent.contract import MAX_PAGE_LIMIT

# --- paging -----------------------------------------------------------------------

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list. ``next_page_id`` is an opaque cursor, ``None`` on the last page."""

    results: list[T]
    next_page_id: str | None = None


class Count(BaseModel):
    count: int


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the agent and the gateway has this body."""

    detail: Any = Field(description="What was wrong: a sentence, or a list of field errors.")


# --- conversations ----------------------------------------------------------------


class ConversationStatus(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    STOPPING = "STOPPING"
    ERROR = "ERROR"
    #: Frozen by ``POST .../pause`` or the idle policy; any request resumes it (READY).
    PAUSED = "PAUSED"


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


# --- event details ----------------------------------------------------------------


class ConversationStatusUpdate(BaseModel):
    type: Literal["ConversationStatusUpdate"] = "ConversationStatusUpdate"
    status: ConversationStatus
    conversation_id: UUID
    phase: str | None = Field(None, description="While STARTING: what the runtime is doing.")
    reason: str | None = Field(None, description="For ERROR and STOPPING: why.")


class TaskStatusUpdate(BaseModel):
    type: Literal["TaskStatusUpdate"] = "TaskStatusUpdate"
    task_id: UUID
    status: TaskStatus
    exit_code: int | None = None
    error: str | None = None


class TaskOutput(BaseModel):
    type: Literal["TaskOutput"] = "TaskOutput"
    task_id: UUID
    stream: Literal["stdout", "stderr"]
    data: str


class OutputTruncated(BaseModel):
    """A task passed its output budget: the rest of its output is in ``path`` (in the workspace)."""

    type: Literal["OutputTruncated"] = "OutputTruncated"
    task_id: UUID
    limit_bytes: int
    path: str


class TerminalExited(BaseModel):
    """A terminal's process ended (its output is never in the event log: replay it from the terminal)."""

    type: Literal["TerminalExited"] = "TerminalExited"
    terminal_id: UUID
    exit_code: int | None = Field(
        None, description="The leader's exit code (negative: killed by that signal)."
    )


class Tick(BaseModel):
    type: Literal["Tick"] = "Tick"
    task_id: UUID
    message: str
    iteration: int


class Forked(BaseModel):
    """The first event after READY of a fork: its workspace is a copy of another
    conversation's at that conversation's ``seq``; processes were not copied."""

    type: Literal["Forked"] = "Forked"
    from_conversation_id: UUID
    from_seq: int = Field(ge=0)
    message: str = "forked: the workspace was copied; processes, terminals and events were not"


class ErrorEvent(BaseModel):
    """Sent to one WebSocket client whose frame could not be used; never stored."""

    type: Literal["Error"] = "Error"
    message: str
    errors: list[Any] | None = None


def _type_not_reserved(schema: dict[str, Any]) -> None:
    # Said in the schema too, so that a system event matches exactly one branch of
    # Event.detail's oneOf (a validator would otherwise find it valid twice).
    schema["properties"]["type"]["not"] = {"enum": sorted(RESERVED_TYPES)}


class ClientEvent(BaseModel):
    """Any JSON object a client triggers, with a ``type`` that is not one of the reserved ones."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_type_not_reserved)
    type: str = Field(min_length=1, max_length=200)

    @field_validator("type")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_TYPES:
            raise ValueError(f"event type {value!r} is reserved for the sandbox itself")
        return value


SYSTEM_DETAILS: tuple[type[BaseModel], ...] = (
    ConversationStatusUpdate,
    TaskStatusUpdate,
    TaskOutput,
    OutputTruncated,
    Tick,
    ErrorEvent,
    Forked,
    TerminalExited,
)
RESERVED_TYPES: frozenset[str] = frozenset(
    str(model.model_fields["type"].default) for model in SYSTEM_DETAILS
)


def _detail_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) and kind in RESERVED_TYPES else "client"


EventDetail = Annotated[
    Annotated[ConversationStatusUpdate, Tag("ConversationStatusUpdate")]
    | Annotated[TaskStatusUpdate, Tag("TaskStatusUpdate")]
    | Annotated[TaskOutput, Tag("TaskOutput")]
    | Annotated[OutputTruncated, Tag("OutputTruncated")]
    | Annotated[Tick, Tag("Tick")]
    | Annotated[ErrorEvent, Tag("Error")]
    | Annotated[Forked, Tag("Forked")]
    | Annotated[TerminalExited, Tag("TerminalExited")]
    | Annotated[ClientEvent, Tag("client")],
    Discriminator(_detail_tag),
]


class Event(BaseModel):
    """The envelope of every event."""

    id: UUID
    seq: int = Field(ge=0)
    conversation_id: UUID
    created_at: datetime
    detail: EventDetail


class EventTrigger(BaseModel):
    """Body of ``POST /event`` and of a WebSocket ``{"detail": ...}`` frame."""

    model_config = ConfigDict(extra="forbid")
    detail: ClientEvent


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


# --- terminals (PTYs) --------------------------------------------------------------


class TerminalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cols: int = Field(80, ge=1, le=1000)
    rows: int = Field(24, ge=1, le=1000)
    command: str | list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        min_length=1,
        description="A shell command line (/bin/sh -c), an argv, or null: the user's login shell "
        "(/bin/sh when it has none).",
    )

    @field_validator("command")
    @classmethod
    def _no_nul(cls, value: str | list[str] | None) -> str | list[str] | None:
        parts = [value] if isinstance(value, str) else value or []
        if any("\0" in part for part in parts):
            raise ValueError("a command cannot contain a NUL character")
        return value


class TerminalStatus(StrEnum):
    RUNNING = "RUNNING"
    EXITED = "EXITED"


class Terminal(BaseModel):
    id: UUID
    command: list[str] = Field(description="The argv that runs in it.")
    cols: int
    rows: int
    status: TerminalStatus
    created_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    size: int = Field(0, description="Bytes of output so far: the offset of the next byte.")
    kept_from: int = Field(0, description="The oldest offset still kept (older output was dropped).")


class TerminalResize(BaseModel):
    """Text frame from a viewer: resize the PTY (TIOCSWINSZ; its processes get SIGWINCH)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["resize"]
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


class TerminalSkipped(BaseModel):
    """Text frame to a viewer: the bytes before ``offset`` are no longer kept; the binary
    frames that follow start at ``offset`` (the viewer asked for ``requested``)."""

    type: Literal["skipped"] = "skipped"
    requested: int
    offset: int


class TerminalExit(BaseModel):
    """Text frame to a viewer, after the last output byte: the terminal's process ended;
    the server then closes with 1000."""

    type: Literal["exit"] = "exit"
    exit_code: int | None
    size: int = Field(description="Total bytes of output: the offset after the last byte.")


class TerminalError(BaseModel):
    """Text frame to a viewer whose text frame could not be used (the socket stays open)."""

    type: Literal["error"] = "error"
    message: str


# --- a task's result as one stream (POST /task?wait=true) ----------------------------


class TaskStreamTask(BaseModel):
    """The task as it is: the first line (as created) and the last (final status, exit code)."""

    type: Literal["task"] = "task"
    task: Task


class TaskStreamEvent(BaseModel):
    """One event of the task (output, ticks, status changes), as stored in the event log."""

    type: Literal["event"] = "event"
    event: Event


TaskStreamRecord = Annotated[TaskStreamTask | TaskStreamEvent, Field(discriminator="type")]


# --- files ------------------------------------------------------------------------


class FileInfo(BaseModel):
    name: str
    path: str = Field(description="Relative to the workspace root, '/'-separated.")
    size: int
    is_dir: bool
    modified: datetime


# --- agent info -------------------------------------------------------------------


class AgentLimits(BaseModel):
    max_page_limit: int = MAX_PAGE_LIMIT
    max_task_output_bytes: int
    max_upload_bytes: int
    max_event_bytes: int
    subscriber_queue_size: int
    kill_grace_seconds: float
    terminal_keep_bytes: int = Field(description="Output kept per terminal for replay (at least).")
    max_terminals: int = Field(description="Terminals that may run at once.")


class Activity(BaseModel):
    """``GET /activity`` (gateway only): how long the agent has served nobody, for idle reaping
    by any gateway of the installation. Requests carrying :data:`PASSIVE_HEADER`, and the
    agent's own probes (``/ready``, ``/health``, ``/activity``, ...), do not count."""

    idle_seconds: float = Field(ge=0, description="Seconds since the last request or connection ended.")
    connections: int = Field(ge=0, description="Requests and WebSockets open right now.")


class AgentInfo(BaseModel):
    version: str
    conversation_id: UUID
    workspace: str
    runnables: dict[str, dict[str, Any]] = Field(description="JSON schema of each runnable type.")
    limits: AgentLimits
    template: str | None = Field(None, description="The template the sandbox runs, where it was told.")
