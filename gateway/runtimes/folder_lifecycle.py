"""Snapshots and workspace seeds for the runtimes whose workspaces are local folders.

:class:`FolderSnapshots` is mixed into the process and memory runtimes: the
snapshot block of the Runtime protocol over :mod:`gateway.runtimes.snapshot_folders`,
and :meth:`FolderSnapshots.seed_workspace`, which their ``start`` calls to fill
a new workspace from a :class:`WorkspaceSeed`. A runtime provides where a
sandbox's workspace is, whether it is there, and how to hold it still while it
is copied (the process runtime stops its processes; the memory runtime cannot).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

from gateway.errors import EngineNotFound, RuntimeFailure
from gateway.runtimes import snapshot_folders
from gateway.runtimes.base import SandboxHandle, SnapshotInfo, WorkspaceSeed


class FolderSnapshots:
    """The snapshot block over folders; see the module docstring."""

    _snapshot_root: Path

    def _workspace(self, conversation_id: UUID) -> Path:
        raise NotImplementedError

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _held_still(self, conversation_id: UUID) -> AsyncIterator[None]:
        """While the workspace is copied; by default nothing is frozen."""
        yield

    async def snapshot(self, conversation_id: UUID, info: SnapshotInfo) -> SnapshotInfo:
        if await self.find(conversation_id) is None:
            raise EngineNotFound(f"no sandbox for conversation {conversation_id}")
        async with self._held_still(conversation_id):
            return await asyncio.to_thread(
                snapshot_folders.save, self._snapshot_root, self._workspace(conversation_id), info
            )

    async def snapshots(self) -> builtins.list[SnapshotInfo]:
        try:
            return await asyncio.to_thread(snapshot_folders.every, self._snapshot_root)
        except OSError as error:
            raise RuntimeFailure(f"the snapshots could not be read: {error}") from None

    async def remove_snapshot(self, snapshot_id: UUID) -> bool:
        return await asyncio.to_thread(snapshot_folders.remove, self._snapshot_root, snapshot_id)

    async def seed_workspace(self, workspace: Path, seed: WorkspaceSeed | None) -> None:
        """Fill the new, empty ``workspace`` from ``seed`` (nothing when ``None``)."""
        if seed is None:
            return
        if seed.snapshot_id is not None:
            source = await asyncio.to_thread(
                snapshot_folders.workspace_of, self._snapshot_root, seed.snapshot_id
            )
            await asyncio.to_thread(snapshot_folders.fill, workspace, source)
        elif seed.conversation_id is not None:
            if await self.find(seed.conversation_id) is None:
                raise RuntimeFailure(f"no sandbox for conversation {seed.conversation_id} to fork")
            async with self._held_still(seed.conversation_id):
                await asyncio.to_thread(
                    snapshot_folders.fill, workspace, self._workspace(seed.conversation_id)
                )
