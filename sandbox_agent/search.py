"""``GET /file-search`` and ``GET /file-count``: walking the workspace tree.

Contract:
- Entries (files and directories) under ``path`` (default: the root), never
  the start directory itself, matched by ``pattern`` (a glob, ``fnmatch``
  rules, on the workspace-relative path: ``*`` crosses ``/``) and/or ``q`` (a
  case-insensitive substring of that path). No filter matches everything.
- Results are ordered by path compared component by component (a directory,
  then everything inside it, then its next sibling), which is the order of a
  depth-first walk with sorted siblings; the cursor is the last path of a page.
  A page walks only what it needs: subtrees before the cursor are skipped.
- Symlinks are listed but never followed, so the walk cannot leave the
  workspace or loop. The walk runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from itertools import islice
from pathlib import Path

from sandbox_agent.files import Workspace
from sandbox_agent.protocol import FileInfo


class Matcher:
    def __init__(self, pattern: str | None, q: str | None) -> None:
        self.pattern = pattern or None
        self.q = q.lower() if q else None

    def __call__(self, rel: str) -> bool:
        if self.pattern is not None and not fnmatchcase(rel, self.pattern):
            return False
        return self.q is None or self.q in rel.lower()


def _walk(directory: Path, prefix: str, after: list[str] | None) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative path, entry) in component order, strictly after the ``after`` components."""
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:  # vanished or unreadable meanwhile: nothing to list there
        return
    for entry in entries:
        descend_after: list[str] | None = None
        if after is not None:
            if entry.name < after[0]:
                continue
            if entry.name == after[0]:
                if len(after) == 1:
                    descend_after = None  # the cursor itself: skip it, everything inside follows it
                else:
                    descend_after = after[1:]
                    if entry.is_dir(follow_symlinks=False):
                        yield from _walk(Path(entry.path), f"{prefix}{entry.name}/", descend_after)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    yield from _walk(Path(entry.path), f"{prefix}{entry.name}/", None)
                continue
        rel = prefix + entry.name
        yield rel, entry
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), rel + "/", None)


def printable(name: str) -> str:
    """A file name as UTF-8 text: bytes that are not UTF-8 (undecodable names made by a
    task) show as U+FFFD rather than break the JSON answer."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "replace")
    return name


def _info(rel: str, entry: os.DirEntry[str]) -> FileInfo | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    is_dir = entry.is_dir(follow_symlinks=False)
    return FileInfo(
        name=printable(entry.name),
        path=printable(rel),
        size=0 if is_dir else st.st_size,
        is_dir=is_dir,
        modified=datetime.fromtimestamp(st.st_mtime, UTC),
    )


def _search(
    start: Path, prefix: str, matcher: Matcher, after: str | None, limit: int
) -> tuple[list[FileInfo], bool]:
    after_parts = None
    if after is not None:
        if prefix and not after.startswith(prefix):
            after_parts = None if after < prefix else [chr(0x10FFFF)]
        else:
            after_parts = after[len(prefix) :].split("/")
    found: list[FileInfo] = []
    matches = ((rel, entry) for rel, entry in _walk(start, prefix, after_parts) if matcher(rel))
    for rel, entry in islice(matches, limit + 1):
        info = _info(rel, entry)
        if info is not None:
            found.append(info)
    return found[:limit], len(found) > limit


def _count(start: Path, prefix: str, matcher: Matcher) -> int:
    return sum(1 for rel, _ in _walk(start, prefix, None) if matcher(rel))


async def search(
    workspace: Workspace, path: str, matcher: Matcher, after: str | None, limit: int
) -> tuple[list[FileInfo], str | None]:
    """One page of matches and the cursor of the next page (``None``: last page)."""
    start = await workspace.directory(path)
    prefix = f"{start.rel}/" if start.rel else ""
    results, more = await asyncio.to_thread(_search, start.real, prefix, matcher, after, limit)
    return results, (results[-1].path if more and results else None)


async def count(workspace: Workspace, path: str, matcher: Matcher) -> int:
    start = await workspace.directory(path)
    prefix = f"{start.rel}/" if start.rel else ""
    return await asyncio.to_thread(_count, start.real, prefix, matcher)
