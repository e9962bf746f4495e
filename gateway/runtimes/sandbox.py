"""What a runtime says of one sandbox: its spec (what it was started with and keeps as its
metadata), its state and handle, what it uses, and the snapshots taken of its workspace.

Plain frozen values, no behaviour: the Runtime seam (:mod:`gateway.runtimes.base`) states
what each runtime promises about them, and re-exports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID

__all__ = [
    "ProgressCallback",
    "ResourceLimits",
    "ResourceUsage",
    "SandboxHandle",
    "SandboxSpec",
    "SandboxState",
    "SnapshotInfo",
    "WorkspaceSeed",
]

#: Called by :meth:`Runtime.start` with a short phase name ("creating volume", ...).
ProgressCallback = Callable[[str], Awaitable[None]]


class SandboxState(StrEnum):
    """What a runtime can say of one sandbox."""

    STARTING = "STARTING"  # created, agent not answering yet
    RUNNING = "RUNNING"  # process/container alive
    EXITED = "EXITED"  # process/container ended; exit_code/oom say how
    PAUSED = "PAUSED"  # frozen by pause(), memory kept, until resume()


@dataclass(frozen=True)
class ResourceLimits:
    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a runtime needs to start a sandbox, and keeps as its metadata."""

    conversation_id: UUID
    owner: str
    title: str
    token: str
    created_at: datetime
    env: dict[str, str] = field(default_factory=dict)
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    internet: bool = False
    idle_timeout: float | None = None
    #: The egress allow-list (normalised entries, see :mod:`gateway.egress`); ``None``: no egress
    #: beyond ``internet``. Only runtimes with ``enforces_egress`` start a spec that has one.
    egress: tuple[str, ...] | None = None
    # --- lifecycle: idle policy and workspace seed ---
    #: What the gateway does with it once idle: "delete" or "pause" (kept as metadata).
    on_idle: str = "delete"
    #: Where the workspace comes from at start; only :meth:`Runtime.start` reads it (not kept).
    seed: WorkspaceSeed | None = None
    # --- the pool ---
    #: Set for a spare (see "Spares" in :mod:`gateway.runtimes.base`): the pool it was made for.
    #: ``owner`` is then empty and ``token`` the claim secret. ``None``: a conversation's sandbox.
    pool: str | None = None
    #: The template (:mod:`gateway.runtimes.templates`) the sandbox runs; the runtime's own image by default.
    template: str = "default"


@dataclass(frozen=True)
class WorkspaceSeed:
    """The workspace a new sandbox starts with: a snapshot's, or (a fork) another
    sandbox's at the moment of the start. Exactly one is set."""

    snapshot_id: UUID | None = None
    conversation_id: UUID | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot as the runtime keeps it. ``size``: bytes of the copied workspace (its
    files' sizes; Docker counts what ``du -sb`` does, directories included)."""

    id: UUID
    owner: str
    name: str
    created_at: datetime
    size: int
    #: The conversation it was taken of (which may be gone by now).
    conversation_id: UUID


@dataclass(frozen=True)
class SandboxHandle:
    """One sandbox as the runtime sees it. ``base_url`` has no trailing slash."""

    spec: SandboxSpec
    base_url: str
    state: SandboxState
    exit_code: int | None = None
    oom_killed: bool = False
    #: For EXITED: why, in words ("ran out of memory (OOM) ...", the last log lines); else None.
    reason: str | None = None

    @property
    def conversation_id(self) -> UUID:
        return self.spec.conversation_id

    @property
    def token(self) -> str:
        return self.spec.token


# --- usage (issue 14: what a sandbox uses) ------------------------------------------


@dataclass(frozen=True)
class ResourceUsage:
    """What one sandbox uses now, as its runtime can measure it; ``None``: this runtime
    cannot know it (each runtime's :meth:`Runtime.usage` says which it leaves out).

    ``cpu_seconds`` is cumulative (user + system, of every process it ran that the
    runtime can still account for); memory is resident bytes; ``disk_bytes`` the size
    of the files in the workspace (``disk_complete`` False: the walk stopped at its
    bound, the true size is larger); network bytes are cumulative, in and out of the
    sandbox; ``pids`` the processes (and threads, where the runtime counts them) now."""

    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    disk_bytes: int | None = None
    disk_complete: bool = True
    network_rx_bytes: int | None = None
    network_tx_bytes: int | None = None
    pids: int | None = None
