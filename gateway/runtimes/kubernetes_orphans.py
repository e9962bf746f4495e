"""What the Kubernetes runtime leaves behind and removes, and the lifecycle it does not have.

:func:`left_over` is pure: the conversations whose objects no start and no
sandbox owns any more. :class:`WithoutLifecycle`: pause, resume, snapshots,
templates and usage, which this runtime refuses or answers empty (see
:mod:`gateway.runtimes.kubernetes`).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import (
    ResourceUsage,
    SandboxHandle,
    SnapshotInfo,
)
from gateway.runtimes.kubernetes_objects import CONVERSATION_ID, ROLE
from gateway.runtimes.kubernetes_state import created
from gateway.runtimes.kubernetes_watch import gone
from gateway.runtimes.template_catalog import CatalogueTemplates, DefaultTemplateOnly


def age(obj: dict[str, Any]) -> float:
    """Seconds since the object was made (its creationTimestamp; 0 when unknown)."""
    made = created(obj)
    return 0.0 if made is None else time.time() - made


def left_over(
    objects: Iterable[dict[str, Any]], kept: set[UUID], carried: set[str], cutoff: float
) -> set[UUID]:
    """The conversations of ``objects`` (carriers, Secrets, pods) older than ``cutoff`` seconds
    that are neither ``kept`` (listed with a spec, or starting here) nor, for a Secret or a
    pod, ``carried`` (a carrier of theirs exists: its spec may be readable again soon)."""
    found: set[UUID] = set()
    for obj in objects:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        text = labels.get(CONVERSATION_ID)
        if not text or gone(obj) or age(obj) < cutoff:
            continue
        try:
            conversation_id = UUID(text)
        except ValueError:
            continue
        carrier = (labels.get(ROLE) in ("sandbox", "spare") and obj.get("kind") != "Pod") or obj.get(
            "kind"
        ) == "Pod"
        if conversation_id in kept or (text in carried and not carrier):
            continue
        found.add(conversation_id)
    return found


class WithoutLifecycle(CatalogueTemplates):
    """The blocks of the Runtime protocol the Kubernetes runtime does not have (templates: the
    default only, through the shared :class:`CatalogueTemplates` block)."""

    _templates: DefaultTemplateOnly

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        raise NotImplementedError

    async def usage(self, conversation_id: UUID) -> ResourceUsage | None:
        """Nothing is measured (no metrics API is read): every figure ``None``."""
        handle = await self.find(conversation_id)
        return None if handle is None else ResourceUsage()

    async def pause(self, conversation_id: UUID) -> SandboxHandle:
        raise RuntimeFailure(
            "the kubernetes runtime cannot pause a sandbox (a suspended pod loses its memory)"
        )

    async def resume(self, conversation_id: UUID) -> SandboxHandle:
        raise RuntimeFailure("the kubernetes runtime cannot pause or resume a sandbox")

    async def snapshot(self, conversation_id: UUID, info: SnapshotInfo) -> SnapshotInfo:
        raise RuntimeFailure("the kubernetes runtime takes no snapshots (the workspace is the pod's)")

    async def snapshots(self) -> builtins.list[SnapshotInfo]:
        return []

    async def remove_snapshot(self, snapshot_id: UUID) -> bool:
        return False
