"""The whole workspace as one tar archive, out and in: snapshots where the engine cannot copy volumes.

``GET /workspace-archive`` and ``PUT /workspace-archive`` (gateway only, never
proxied; the swarm runtime's snapshots and forks). Contracts:

- :func:`archive_stream`: an uncompressed POSIX tar of the workspace, members
  named relative to it, streamed as it is written (a worker thread writes into a
  pipe: memory stays flat whatever the size, and nothing is staged on the disk).
  Regular files (a hard link becomes a copy), directories and symbolic links
  (kept as links, never followed); sockets, FIFOs and devices are left out.
  Modes and modification times are kept.
- :func:`fill`: the body is staged in the upload staging dir (outside the
  workspace), then its members are extracted into the workspace, replacing files
  of the same name. Refused as a whole (:class:`Unprocessable`, nothing
  extracted) when it is no tar, or a member's name is absolute, has ``..``, or
  goes through a symbolic link; other kinds of member are skipped. More than
  ``max_bytes`` of body is :class:`TooLarge`. The Python of 3.11.2 (the
  image's) has no extraction filters: these checks are them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from uuid import uuid4

from sandbox_agent.errors import TooLarge, Unprocessable, storage_error

CHUNK = 256 * 1024


def _member(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """What goes in: files (hard links are copies: :class:`_LinkFreeTar`), directories,
    symbolic links; owners are left out (the agent that extracts it owns all)."""
    if not (info.isreg() or info.isdir() or info.issym()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


async def archive_stream(root: Path) -> AsyncIterator[bytes]:
    """The tar of the workspace ``root``, chunk by chunk (see the module docstring)."""
    read_fd, write_fd = os.pipe()
    writer = asyncio.create_task(asyncio.to_thread(_write, root, os.fdopen(write_fd, "wb")))
    try:
        while chunk := await asyncio.to_thread(os.read, read_fd, CHUNK):
            yield chunk
        await writer
    finally:
        os.close(read_fd)  # a writer still going gets EPIPE and ends
        with contextlib.suppress(BaseException):
            await writer


class _LinkFreeTar(tarfile.TarFile):
    """A TarFile that never records a hard link: each path is stored with its own data."""

    def gettarinfo(
        self, name: Any = None, arcname: str | None = None, fileobj: Any = None
    ) -> tarfile.TarInfo:
        self.inodes.clear()  # type: ignore[attr-defined]
        return super().gettarinfo(name, arcname, fileobj)


def _write(root: Path, out: BinaryIO) -> None:
    """The tar of ``root`` into ``out`` (blocking: a worker thread)."""
    with out, _LinkFreeTar.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(root)):
            tar.add(str(root / entry), arcname=entry, recursive=True, filter=_member)


# --- in ---------------------------------------------------------------------------------


async def fill(root: Path, staging: Path, body: AsyncIterator[bytes], max_bytes: int) -> int:
    """Extract the tar ``body`` into the workspace ``root``; how many members it placed."""
    await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
    staged = staging / f"archive-{uuid4().hex}.tar"
    try:
        await _stage(staged, body, max_bytes)
        return await asyncio.to_thread(_extract, staged, root)
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()


async def _stage(path: Path, body: AsyncIterator[bytes], max_bytes: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > max_bytes:
                raise TooLarge(f"the archive is larger than {max_bytes} bytes")
            await asyncio.to_thread(os.write, fd, chunk)
    except OSError as error:
        raise storage_error(error, "the archive") from None
    finally:
        os.close(fd)


def _checked(members: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """The members to extract; :class:`Unprocessable` for any that would leave the workspace."""
    links: set[PurePosixPath] = set()
    kept = []
    for info in members:
        name = PurePosixPath(info.name)
        if name.is_absolute() or ".." in name.parts:
            raise Unprocessable(f"archive member {info.name!r} leaves the workspace")
        if any(parent in links for parent in name.parents):
            raise Unprocessable(f"archive member {info.name!r} goes through a symbolic link")
        if info.issym():
            links.add(name)
        if info.isreg() or info.isdir() or info.issym():
            kept.append(info)
    return kept


def _extract(staged: Path, root: Path) -> int:
    try:
        with tarfile.open(staged, mode="r:") as tar:
            members = _checked(tar.getmembers())
            for info in members:
                _place(tar, info, root)
    except tarfile.TarError as error:
        raise Unprocessable(f"the body is not a tar archive: {error}") from None
    except OSError as error:
        raise storage_error(error, "the archive") from None
    return len(members)


def _place(tar: tarfile.TarFile, info: tarfile.TarInfo, root: Path) -> None:
    """One member at its place; owners are the agent's, modes and times the archive's."""
    name = PurePosixPath(info.name)
    if any((root / parent).is_symlink() for parent in name.parents if parent != PurePosixPath(".")):
        raise Unprocessable(f"archive member {info.name!r} goes through a symbolic link")
    target = root / info.name
    if not info.isdir() and (target.is_symlink() or target.is_file()):
        target.unlink()
    tar.extract(info, root, set_attrs=False)
    if not info.issym():
        # the owner may always read and write (and enter) what it gets back
        os.chmod(target, stat.S_IMODE(info.mode) | (0o700 if info.isdir() else 0o600))
        os.utime(target, (info.mtime, info.mtime))
