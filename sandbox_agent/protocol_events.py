"""The wire's events: the envelope, every detail a sandbox or a client writes, and a
task's result as one stream. Part of :mod:`sandbox_agent.protocol`, which re-exports all
of it: import from there."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from sandbox_agent.protocol_tasks import Task, TaskStatus

# --- conversations ----------------------------------------------------------------


class ConversationStatus(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    STOPPING = "STOPPING"
    ERROR = "ERROR"
    #: Frozen by ``POST .../pause`` or the idle policy; any request resumes it (READY).
    PAUSED = "PAUSED"


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


__all__ = [
    "RESERVED_TYPES",
    "SYSTEM_DETAILS",
    "ClientEvent",
    "ConversationStatus",
    "ConversationStatusUpdate",
    "ErrorEvent",
    "Event",
    "EventDetail",
    "EventTrigger",
    "Forked",
    "OutputTruncated",
    "TaskOutput",
    "TaskStatusUpdate",
    "TaskStreamEvent",
    "TaskStreamRecord",
    "TaskStreamTask",
    "TerminalExited",
    "Tick",
]
