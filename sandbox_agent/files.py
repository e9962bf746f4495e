"""The workspace jail and the file operations on it.

Contract:
- Every client path is relative to the workspace root, ``/``-separated.
  :meth:`Workspace.resolve` refuses a NUL byte, an absolute path or any ``..``
  component with :class:`BadPath` (400), and a path whose real location
  (symlinks resolved) is outside the root with :class:`PathEscapes` (403).
  Refusal happens before anything is touched.
- Operations that touch the disk run in a worker thread, never on the loop.
- Delete removes a file, a symlink (the link, never its target) or a whole
  directory tree; the root itself cannot be deleted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandbox_agent.errors import BadPath, Conflict, NotFound, PathEscapes
from sandbox_agent.protocol import FileInfo


@dataclass(frozen=True)
class Resolved:
    """A path inside the workspace: ``rel`` as the client named it (normalised), ``real`` on disk."""

    rel: str
    real: Path  # symlinks resolved; inside the root
    named: Path  # root / rel, symlinks not resolved (what delete removes)

    @property
    def is_root(self) -> bool:
        return self.rel == ""


class Workspace:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))

    # --- the jail -------------------------------------------------------------

    def resolve(self, path: str) -> Resolved:
        if "\x00" in path:
            raise BadPath("path contains a NUL byte")
        if path.startswith("/"):
            raise BadPath(f"absolute paths are refused: {path!r}")
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise BadPath(f"'..' is refused: {path!r}")
        named = self.root.joinpath(*parts)
        real = Path(os.path.realpath(named))
        if not self.contains(real):
            raise PathEscapes(f"path leaves the workspace: {path!r}")
        return Resolved("/".join(parts), real, named)

    def contains(self, real: Path) -> bool:
        return real == self.root or self.root in real.parents

    def relative(self, real: Path) -> str:
        return "" if real == self.root else real.relative_to(self.root).as_posix()

    # --- operations -----------------------------------------------------------

    async def info(self, path: str) -> FileInfo:
        target = self.resolve(path)
        return await asyncio.to_thread(self._info, target)

    async def mkdir(self, path: str) -> FileInfo:
        target = self.resolve(path)
        return await asyncio.to_thread(self._mkdir, target)

    async def touch(self, path: str) -> FileInfo:
        target = self.resolve(path)
        return await asyncio.to_thread(self._touch, target)

    async def delete(self, path: str) -> None:
        target = self.resolve(path)
        if target.is_root:
            raise BadPath("the workspace root cannot be deleted")
        await asyncio.to_thread(self._delete, target)

    async def directory(self, path: str) -> Resolved:
        """``path`` resolved, and an existing directory (404 missing, 400 a file)."""
        target = self.resolve(path)
        if target.is_root:
            return target  # the agent made it and keeps it: every task's default cwd, no thread
        is_dir = await asyncio.to_thread(target.real.is_dir)
        if not is_dir:
            if await asyncio.to_thread(target.real.exists):
                raise BadPath(f"not a directory: {path!r}")
            raise NotFound(f"no such directory: {path!r}")
        return target

    # --- blocking helpers (worker threads) ------------------------------------

    def _info(self, target: Resolved) -> FileInfo:
        try:
            return file_info(target.real, target.rel)
        except FileNotFoundError:
            raise NotFound(f"no such file or directory: {target.rel!r}") from None

    def _mkdir(self, target: Resolved) -> FileInfo:
        self._ensure_parent(target)
        try:
            target.real.mkdir()
        except FileExistsError:
            raise Conflict(f"already exists: {target.rel!r}") from None
        return file_info(target.real, target.rel)

    def _touch(self, target: Resolved) -> FileInfo:
        self._ensure_parent(target)
        try:
            fd = os.open(target.real, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            raise Conflict(f"already exists: {target.rel!r}") from None
        os.close(fd)
        return file_info(target.real, target.rel)

    def _ensure_parent(self, target: Resolved) -> None:
        if target.is_root:
            raise Conflict("the workspace root already exists")
        make_parents(self, target.real.parent)

    def _delete(self, target: Resolved) -> None:
        try:
            mode = os.lstat(target.named).st_mode
        except FileNotFoundError:
            raise NotFound(f"no such file or directory: {target.rel!r}") from None
        if stat.S_ISDIR(mode):
            shutil.rmtree(target.named)
        else:
            os.unlink(target.named)


def make_parents(workspace: Workspace, directory: Path) -> None:
    """Create ``directory`` and missing parents inside the workspace; 409 when a file is in the way."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Conflict(f"a file is in the way of {workspace.relative(directory)!r}") from None
    if not workspace.contains(Path(os.path.realpath(directory))):
        raise PathEscapes("path leaves the workspace")


def file_info(real: Path, rel: str) -> FileInfo:
    st = real.stat()
    return FileInfo(
        name=rel.rsplit("/", 1)[-1],
        path=rel,
        size=0 if stat.S_ISDIR(st.st_mode) else st.st_size,
        is_dir=stat.S_ISDIR(st.st_mode),
        modified=datetime.fromtimestamp(st.st_mtime, UTC),
    )
