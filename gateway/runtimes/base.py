"""The Runtime seam: how a sandbox is started, found and removed.

Nothing above this module knows which runtime is underneath. A runtime keeps
the metadata of every sandbox it started (the :class:`SandboxSpec` minus
nothing) itself - container labels, a metadata file - so that a gateway killed
and started again rebuilds its whole view from :meth:`Runtime.list`.

Errors: every runtime raises only :class:`RuntimeError_` subclasses; foreign
errors (aiodocker, OSError, httpx) are mapped at the runtime's boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from uuid import UUID

import httpx

#: Called by :meth:`Runtime.start` with a short phase name ("creating volume", ...).
ProgressCallback = Callable[[str], Awaitable[None]]


class SandboxState(StrEnum):
    """What a runtime can say of one sandbox."""

    STARTING = "STARTING"  # created, agent not answering yet
    RUNNING = "RUNNING"  # process/container alive
    EXITED = "EXITED"  # process/container ended; exit_code/oom say how


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


class RuntimeError_(Exception):
    """Base of every error a runtime raises."""


class SandboxStartError(RuntimeError_):
    """The sandbox did not become ready. ``str(error)`` is the reason shown to the user
    (with the sandbox's last log lines where the runtime has them). Whatever was
    created has already been removed when this is raised."""


class RuntimeUnavailable(RuntimeError_):
    """The runtime's backend (Docker engine, ...) cannot be reached."""


class Runtime(Protocol):
    """Starts, finds, lists and removes sandboxes. One instance per gateway."""

    name: str
    #: Whether :attr:`SandboxSpec.egress` is enforced; the gateway refuses an allow-list otherwise.
    enforces_egress: bool

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        """Start a sandbox for ``spec`` and return once its agent answers ``/ready``.

        Calls ``progress`` with each phase. Raises :class:`SandboxStartError`
        (after removing what it created) when the agent does not get ready
        within the runtime's start timeout, and :class:`RuntimeUnavailable`
        when the backend cannot be reached.
        """
        ...

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        """The sandbox of ``conversation_id``, or ``None`` when this runtime has none."""
        ...

    async def list(self) -> list[SandboxHandle]:
        """Every sandbox of this installation, in any state, with its metadata."""
        ...

    async def remove(self, conversation_id: UUID) -> bool:
        """Stop the sandbox (with a grace period) and remove it and all it owns
        (volume, workspace, state). Returns ``False`` when there was nothing to
        remove. Idempotent."""
        ...

    async def cleanup_orphans(self) -> int:
        """Remove what this installation left behind without a live sandbox
        (volumes without a container, exited sandboxes). Returns how many
        sandboxes/volumes were removed."""
        ...

    async def close(self) -> None:
        """Release the runtime's own resources; sandboxes keep running."""
        ...


async def wait_until_ready(
    base_url: str,
    *,
    within: float,
    interval: float = 0.02,
    alive: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Poll ``GET {base_url}/ready`` until it answers 200.

    Raises :class:`SandboxStartError` after ``within`` seconds, or as soon as
    ``alive`` (when given) says the sandbox process is gone.
    """
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                response = await client.get(f"{base_url}/ready")
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if alive is not None and not await alive():
                raise SandboxStartError("the sandbox exited before its agent was ready")
            if time.monotonic() >= deadline:
                raise SandboxStartError(f"the agent did not answer /ready within {within:g}s")
            await asyncio.sleep(interval)
