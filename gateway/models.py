"""The gateway's own wire models: conversations. Everything per-conversation is in
:mod:`sandbox_agent.protocol`, re-exported here so the gateway and its clients
import wire models from one place."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.egress import MAX_ENTRIES, normalize_entries
from sandbox_agent.protocol import (
    RESERVED_ENV_PREFIX,
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
    "AgentInfo",
    "Conversation",
    "ConversationCreate",
    "ConversationLimits",
    "ConversationStatus",
    "ConversationUsage",
    "Count",
    "EgressPolicy",
    "ErrorBody",
    "Event",
    "EventTrigger",
    "FileInfo",
    "ForkCreate",
    "OnIdle",
    "Page",
    "PoolStatus",
    "Snapshot",
    "SnapshotCreate",
    "Task",
    "TaskCreate",
    "TaskStatus",
    "TemplateInfo",
]


OnIdle = Literal["delete", "pause"]


class ConversationLimits(BaseModel):
    """Resource limits for one sandbox; unset fields take the gateway's defaults.
    Runtimes without isolation (process) record but cannot enforce them."""

    model_config = ConfigDict(extra="forbid")
    memory_bytes: int | None = Field(None, ge=6 * 1024 * 1024, le=64 * 1024**3)
    cpus: float | None = Field(None, gt=0, le=64, allow_inf_nan=False)
    pids: int | None = Field(None, ge=16, le=65536)


class EgressPolicy(BaseModel):
    """Where a sandbox may connect (without ``internet``): through the HTTP(S) proxy and
    the DNS of its relay, to these names and networks only; everything else is refused."""

    model_config = ConfigDict(extra="forbid")
    allow: list[str] = Field(
        ...,
        max_length=MAX_ENTRIES,
        description="Domains (pypi.org), wildcards (*.pythonhosted.org: names below it) and CIDRs.",
        examples=[["pypi.org", "*.pythonhosted.org", "10.1.2.0/24"]],
    )

    @field_validator("allow")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        return normalize_entries(value)


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
    egress: EgressPolicy | None = Field(
        None, description="Instead of internet: reach only these hosts, through the sandbox's proxy."
    )
    # --- lifecycle: idle policy and a snapshot to start from ---
    on_idle: OnIdle | None = Field(
        None,
        description="Once idle: delete it, or pause it (removed after CONVOY_PAUSED_TTL); default: on_idle.",
    )
    snapshot: UUID | None = Field(
        None, description="Start with the workspace of this snapshot (one of yours)."
    )
    template: str | None = Field(
        None,
        max_length=63,
        description="The template (GET /template) the sandbox runs; unset: the gateway's default template.",
        examples=["default"],
    )

    @model_validator(mode="after")
    def _egress_or_internet(self) -> ConversationCreate:
        if self.internet and self.egress is not None:
            raise ValueError("egress allows a list of hosts and internet allows all: ask for one of them")
        return self

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
    egress: EgressPolicy | None = None
    limits: ConversationLimits
    on_idle: OnIdle = "delete"
    template: str = Field("default", description="The template its sandbox runs.")
    # --- the pool ---
    start: Literal["warm", "cold"] = Field(
        "cold",
        description="warm: a ready sandbox of the pool was claimed (READY at once); cold: started anew.",
    )


# --- usage (issue 14) ------------------------------------------------------------------


class ConversationUsage(BaseModel):
    """What a conversation's sandbox uses now, measured by its runtime (cgroup and engine
    stats on Docker, ``/proc`` on the process runtime). ``null``: this runtime cannot know
    it (network on the process and memory runtimes)."""

    conversation_id: UUID
    measured_at: datetime
    runtime: str = Field(description="The runtime that measured it.")
    cpu_seconds: float | None = Field(None, description="CPU time used so far (user + system).")
    memory_bytes: int | None = Field(None, description="Resident memory now.")
    memory_peak_bytes: int | None = Field(None, description="The highest resident memory seen.")
    disk_bytes: int | None = Field(None, description="Bytes of the files in the workspace.")
    disk_complete: bool = Field(True, description="False: the workspace is larger than was walked.")
    network_rx_bytes: int | None = Field(
        None,
        description=(
            "Bytes received over the sandbox's network interfaces so far (loopback aside). A sandbox "
            "with no network (Docker's default: no internet, no egress list) has none: 0, whatever "
            "the gateway exchanged with its agent over the agent's Unix socket (that traffic is not "
            "network; the gateway counts it in convoy_proxied_bytes_total). Through a relay that "
            "traffic crosses the sandbox's interface and is counted."
        ),
    )
    network_tx_bytes: int | None = Field(
        None, description="Bytes sent over the sandbox's network interfaces so far (as network_rx_bytes)."
    )
    pids: int | None = Field(None, description="Processes (Docker: and threads) now.")


# --- preview ports ------------------------------------------------------------------


class PortLinkCreate(BaseModel):
    """Body of ``POST /conversation/{id}/port/{port}/link``."""

    model_config = ConfigDict(extra="forbid")
    expires_in: int = Field(
        3600, ge=1, description="Seconds the link works (at most the gateway's preview_link_max_ttl)."
    )


class PortLink(BaseModel):
    url: str = Field(description="Opens the port without a key until expires_at (keep it secret).")
    expires_at: datetime


# --- lifecycle: forks and snapshots -------------------------------------------------


class ForkCreate(BaseModel):
    """Body of ``POST /conversation/{id}/fork`` (optional)."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, max_length=200, description="Default: the original's, with ' (fork)'.")


class SnapshotCreate(BaseModel):
    """Body of ``POST /conversation/{id}/snapshot``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200)


class Snapshot(BaseModel):
    """A saved copy of one conversation's workspace; ``size`` in bytes."""

    id: UUID
    name: str
    owner: str
    created_at: datetime
    size: int
    conversation_id: UUID = Field(description="The conversation it was taken of (which may be gone).")


# --- the pool (gateway/pool.py) ------------------------------------------------------


class PoolStatus(BaseModel):
    """``GET /pool``: the ready spare sandboxes, and how creates were served since start."""

    size: int = Field(..., description="Spares kept ready per pool (CONVOY_POOL_SIZE).")
    sizes: dict[str, int] = Field(
        default_factory=dict,
        description="Spares kept ready per template (CONVOY_POOL_SIZE for the default, CONVOY_POOL_SIZES).",
    )
    ready: int = Field(..., description="Spares ready to be claimed now (of every template).")
    starting: int = Field(..., description="Spares being started by this gateway.")
    claimed_total: int = Field(
        ..., description="Creates served warm, from a spare, since the gateway started."
    )
    cold_total: int = Field(..., description="Sandboxes started cold for a create since the gateway started.")


class TemplateInfo(BaseModel):
    """One template, as ``GET /template`` lists it."""

    name: str
    description: str = ""
    built_from: str = Field("", description="The image it was built from, or 'Dockerfile'.")
    created_at: datetime | None = None
    size: int | None = Field(None, description="Bytes of its image, where the runtime knows.")
    pool: bool = Field(False, description="Whether the gateway keeps ready sandboxes of it.")
