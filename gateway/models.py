"""The gateway's own wire models: conversations. Everything per-conversation is in
:mod:`sandbox_agent.protocol`, re-exported here so the gateway and its clients
import wire models from one place."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox_agent.protocol import (
    AgentInfo,
    ConversationStatus,
    Count,
    ErrorBody,
    Event,
    EventTrigger,
    FileInfo,
    Page,
    Task,
    TaskCreate,
    TaskStatus,
)

__all__ = [
    "RESERVED_ENV_PREFIX",
    "WS_CLOSE_LIMIT_REACHED",
    "AgentInfo",
    "Conversation",
    "ConversationCreate",
    "ConversationLimits",
    "ConversationStatus",
    "Count",
    "ErrorBody",
    "Event",
    "EventTrigger",
    "FileInfo",
    "Page",
    "Task",
    "TaskCreate",
    "TaskStatus",
]

#: Environment names a conversation may not set: the sandbox agent's own settings live there.
RESERVED_ENV_PREFIX = "CONVOY_"

#: WebSocket close code of ``WS /conversation/``: a conversation limit was reached (HTTP's 429).
WS_CLOSE_LIMIT_REACHED = 4429


class ConversationLimits(BaseModel):
    """Resource limits for one sandbox; unset fields take the gateway's defaults.
    Runtimes without isolation (process) record but cannot enforce them."""

    model_config = ConfigDict(extra="forbid")
    memory_bytes: int | None = Field(None, ge=6 * 1024 * 1024, le=64 * 1024**3)
    cpus: float | None = Field(None, gt=0, le=64, allow_inf_nan=False)
    pids: int | None = Field(None, ge=16, le=65536)


class ConversationCreate(BaseModel):
    """Body of ``POST /conversation`` (and the query of ``WS /conversation/``)."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field("", max_length=200)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for tasks.")
    limits: ConversationLimits = Field(default_factory=ConversationLimits)
    idle_timeout: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds without a request, connection or running task before reaping.",
    )
    internet: bool = Field(False, description="Let the sandbox open outbound internet connections.")

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"{name!r} is not a usable environment variable name")
            if "\0" in text:
                raise ValueError(f"the value of {name!r} contains a NUL byte")
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                raise ValueError(f"{name!r}: names starting with {RESERVED_ENV_PREFIX} are reserved")
        return value


class Conversation(BaseModel):
    id: UUID
    owner: str
    title: str
    status: ConversationStatus
    phase: str | None = Field(None, description="While STARTING: what the runtime is doing.")
    reason: str | None = Field(None, description="For ERROR: why.")
    created_at: datetime
    idle_timeout: float
    internet: bool
    limits: ConversationLimits
