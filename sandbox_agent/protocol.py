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


class Tick(BaseModel):
    type: Literal["Tick"] = "Tick"
    task_id: UUID
    message: str
    iteration: int


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


class AgentInfo(BaseModel):
    version: str
    conversation_id: UUID
    workspace: str
    runnables: dict[str, dict[str, Any]] = Field(description="JSON schema of each runnable type.")
    limits: AgentLimits
    template: str | None = Field(None, description="The template the sandbox runs, where it was told.")
