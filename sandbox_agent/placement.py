"""Moving an upload's staged files to their final paths: all of them, or none.

Contract of :func:`place_all` (blocking: run it in a worker thread):
- First every target is checked (a directory in the way, or an existing file
  with ``overwrite=false``: 409) before anything moves; then the missing
  parent directories are created.
- Then each staged file replaces its target with one atomic ``rename``: a
  reader sees the old file or the whole new one, never a part. When the
  target is on another mount than the staging dir (EXDEV) the file is copied
  next to the target under a hidden temporary name first, then renamed. An
  existing target is hard-linked into the staging dir first, as a backup.
- Any failure undoes the upload, newest first: placed files are removed or
  their backup is put back, and the directories made for the upload are
  removed. The error names the file that failed (507 disk full, 403 refused,
  400 name too long, ...). A replaced file whose backup could not be linked
  (another mount) keeps the uploaded content: it is never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

from sandbox_agent.errors import Conflict, storage_error
from sandbox_agent.files import Resolved, Workspace, file_info, make_parents
from sandbox_agent.protocol import FileInfo

log = logging.getLogger(__name__)

NOTHING_WRITTEN = "; no file of this upload was written"

#: The one rename of a placement (a seam for tests that simulate a failing disk).
_rename = os.replace


@dataclass
class Move:
    staged: Path
    target: Resolved
    existed: bool = False
    backup: Path | None = None
    placed: bool = False


def place_all(workspace: Workspace, moves: list[Move], *, overwrite: bool) -> list[FileInfo]:
    """Place every move or none; returns the infos of the distinct targets, in order."""
    for move in moves:  # check everything before moving anything
        try:
            _check(move.target, overwrite)
        except OSError as error:  # a name too long, a directory we may not read
            raise storage_error(error, f"writing {move.target.rel!r}", NOTHING_WRITTEN) from None
    created: list[Path] = []
    try:
        for index, move in enumerate(moves):
            try:
                created += _make_parents(workspace, move.target.real.parent)
                _place(move, f"{index}.backup")
            except OSError as error:
                raise storage_error(error, f"writing {move.target.rel!r}", NOTHING_WRITTEN) from None
    except BaseException:
        _undo(moves, created)
        raise
    distinct = {move.target.rel: move.target for move in moves}
    return [file_info(target.real, target.rel) for target in distinct.values()]


def _check(target: Resolved, overwrite: bool) -> None:
    if target.real.is_dir():
        raise Conflict(f"a directory is in the way: {target.rel!r}")
    if not overwrite and os.path.lexists(target.real):
        raise Conflict(f"already exists: {target.rel!r}")


def _make_parents(workspace: Workspace, directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; returns those that were missing."""
    missing: list[Path] = []
    probe = directory
    while not os.path.lexists(probe) and workspace.contains(probe) and probe != workspace.root:
        missing.append(probe)
        probe = probe.parent
    make_parents(workspace, directory)
    return missing


def _place(move: Move, backup_name: str) -> None:
    target = move.target.real
    move.existed = os.path.lexists(target)
    if move.existed:
        backup = move.staged.parent / backup_name
        try:
            os.link(target, backup, follow_symlinks=False)
            move.backup = backup
        except OSError as error:  # another mount, a file system without links: no way back
            log.warning("upload: no backup of %s: %s", move.target.rel, error)
    try:
        _rename(move.staged, target)
    except OSError as error:
        if error.errno != errno.EXDEV:  # the target is on another mount
            raise
        _copy_then_rename(move.staged, target)
    move.placed = True


def _copy_then_rename(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{uuid4().hex[:12]}.upload")
    try:
        shutil.copyfile(source, temporary)
        _rename(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _undo(moves: list[Move], created: list[Path]) -> None:
    for move in reversed(moves):  # newest first: a name uploaded twice gets its first state back
        if not move.placed:
            continue
        try:
            if move.backup is not None:
                os.replace(move.backup, move.target.real)
            elif not move.existed:
                os.unlink(move.target.real)
        except OSError as error:
            log.error("upload: cannot undo %s: %s", move.target.rel, error)
    for directory in sorted(created, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: something else lives there now
            directory.rmdir()
