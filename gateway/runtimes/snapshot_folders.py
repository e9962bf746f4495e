"""Snapshots as folders, for the runtimes whose workspaces are folders (process, memory).

``<state_dir>/snapshots/<install>/<snapshot id>/`` holds ``workspace/`` (a copy,
symlinks kept as links) and ``meta.json`` (0600: the :class:`SnapshotInfo`,
written last, so a folder without one is a copy that never finished). Apart
from every sandbox's folder: removing a sandbox or cleaning up orphans never
reaches here. Blocking functions; the runtimes run them in threads.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from uuid import UUID

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import SnapshotInfo

_META = "meta.json"
_WORKSPACE = "workspace"


def root(state_dir: Path, install: str) -> Path:
    return state_dir / "snapshots" / install


def size_of(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def save(snapshots: Path, workspace: Path, info: SnapshotInfo) -> SnapshotInfo:
    """Copy ``workspace`` into a new snapshot folder and record ``info`` (with the size)."""
    folder = snapshots / str(info.id)
    try:
        snapshots.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(mode=0o700)
        shutil.copytree(workspace, folder / _WORKSPACE, symlinks=True)
        saved = SnapshotInfo(**{**info.__dict__, "size": size_of(folder / _WORKSPACE)})
        write_meta(folder, saved)
    except OSError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeFailure(f"the snapshot could not be saved: {error}") from None
    return saved


def write_meta(folder: Path, saved: SnapshotInfo) -> None:
    """Record ``saved`` as the folder's ``meta.json`` (0600), atomically: the snapshot's last step."""
    data = {
        "id": str(saved.id),
        "owner": saved.owner,
        "name": saved.name,
        "created_at": saved.created_at.isoformat(),
        "size": saved.size,
        "conversation_id": str(saved.conversation_id),
    }
    fd = os.open(folder / f".{_META}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(data, file)
    (folder / f".{_META}.tmp").replace(folder / _META)


def read_meta(folder: Path) -> SnapshotInfo | None:
    """The folder's :class:`SnapshotInfo`; ``None`` when it has none (a copy that never finished)."""
    return _read(folder)


def _read(folder: Path) -> SnapshotInfo | None:
    try:
        data = json.loads((folder / _META).read_text())
        return SnapshotInfo(
            id=UUID(data["id"]),
            owner=str(data["owner"]),
            name=str(data["name"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            size=int(data["size"]),
            conversation_id=UUID(data["conversation_id"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def every(snapshots: Path) -> list[SnapshotInfo]:
    if not snapshots.is_dir():
        return []
    found = (_read(folder) for folder in snapshots.iterdir() if folder.is_dir())
    return [info for info in found if info is not None]


def remove(snapshots: Path, snapshot_id: UUID) -> bool:
    folder = snapshots / str(snapshot_id)
    if not folder.is_dir():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def workspace_of(snapshots: Path, snapshot_id: UUID) -> Path:
    """The saved workspace of a finished snapshot; :class:`RuntimeFailure` when there is none."""
    folder = snapshots / str(snapshot_id)
    if _read(folder) is None:
        raise RuntimeFailure(f"snapshot {snapshot_id} does not exist")
    return folder / _WORKSPACE


def fill(workspace: Path, source: Path) -> None:
    """Copy the contents of ``source`` into the (empty) ``workspace``."""
    shutil.copytree(source, workspace, symlinks=True, dirs_exist_ok=True)
