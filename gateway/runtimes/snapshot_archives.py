"""Snapshots as tar archives, for a runtime that reads a workspace out of its agent (swarm).

``<snapshot dir>/<install>/<snapshot id>/`` holds ``workspace.tar`` (what the
agent's ``GET /workspace-archive`` answered) and ``meta.json`` (0600, the
:class:`SnapshotInfo`, written last by :func:`snapshot_folders.write_meta
<gateway.runtimes.snapshot_folders.write_meta>`: a folder without one is a copy
that never finished, listed by nobody and overwritten by nothing, since ids are
new). The listing and removal are :mod:`gateway.runtimes.snapshot_folders`'s.
Several gateways of one installation must share the directory (a volume in a
stack): a snapshot taken through one is started from through another.
The archive is written as it arrives, in a worker thread chunk by chunk:
memory stays flat whatever the workspace's size.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

from gateway.errors import RuntimeFailure
from gateway.runtimes import snapshot_folders
from gateway.runtimes.base import SnapshotInfo

ARCHIVE = "workspace.tar"
CHUNK = 256 * 1024


def _size_of(archive: Path) -> int:
    """Bytes of the regular files in the archive (what a folder snapshot's size counts)."""
    with tarfile.open(archive, mode="r:") as tar:
        return sum(member.size for member in tar if member.isreg())


class ArchiveStore:
    """One installation's archive snapshots under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def save(self, info: SnapshotInfo, chunks: AsyncIterator[bytes]) -> SnapshotInfo:
        """Write the archive from ``chunks``, then its meta (with the size); nothing left on failure."""
        folder = self.root / str(info.id)
        try:
            await asyncio.to_thread(self._make, folder)
            fd = await asyncio.to_thread(
                os.open, folder / ARCHIVE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
            )
            try:
                async for chunk in chunks:
                    await asyncio.to_thread(os.write, fd, chunk)
            finally:
                os.close(fd)
            size = await asyncio.to_thread(_size_of, folder / ARCHIVE)
            saved = SnapshotInfo(**{**info.__dict__, "size": size})
            await asyncio.to_thread(snapshot_folders.write_meta, folder, saved)
        except (OSError, tarfile.TarError) as error:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise RuntimeFailure(f"the snapshot could not be saved: {error}") from None
        except BaseException:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, folder, True))
            raise
        return saved

    def _make(self, folder: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(mode=0o700)

    async def every(self) -> builtins.list[SnapshotInfo]:
        try:
            return await asyncio.to_thread(snapshot_folders.every, self.root)
        except OSError as error:
            raise RuntimeFailure(f"the snapshots could not be read: {error}") from None

    async def remove(self, snapshot_id: UUID) -> bool:
        return await asyncio.to_thread(snapshot_folders.remove, self.root, snapshot_id)

    async def chunks(self, snapshot_id: UUID) -> AsyncIterator[bytes]:
        """The archive of a finished snapshot; :class:`RuntimeFailure` when there is none."""
        folder = self.root / str(snapshot_id)
        if await asyncio.to_thread(snapshot_folders.read_meta, folder) is None:
            raise RuntimeFailure(f"snapshot {snapshot_id} does not exist")
        try:
            file = await asyncio.to_thread(open, folder / ARCHIVE, "rb")
        except OSError as error:
            raise RuntimeFailure(f"snapshot {snapshot_id} cannot be read: {error}") from None
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK):
                yield chunk
        finally:
            file.close()
