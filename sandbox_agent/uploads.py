"""``POST /upload/{parent_path}``: multipart files streamed to disk.

Contract:
- The body is parsed as it arrives (python-multipart's streaming parser); each
  part named ``files`` goes, in chunks, to a temporary file in a staging dir
  of its own under ``settings.upload_staging_dir`` - in the agent's state dir,
  outside the workspace, so a client never sees, lists or touches it. Memory
  stays flat whatever the size. The staging root is emptied at start-up (what
  a crash mid-upload left).
- A part's filename is relative to ``parent_path`` and may contain ``/``
  subdirectories (created as needed); it passes the workspace jail.
- Only once the whole body is in are the files moved into place, all or none
  (:mod:`sandbox_agent.placement`): a failed upload (bad part, 409, 413, a
  full disk, a dropped connection) leaves the workspace as it was and its
  staged files are removed. Existing files are replaced unless
  ``overwrite=false`` (409). Parts with another field name are ignored.
- More than ``max_bytes`` of body is 413. A disk that fills up while a file is
  received or placed is 507, and the ``detail`` names that file.
- The state dir and the workspace share one volume in both runtimes (Docker:
  ``/data``; process: the sandbox's folder), so placing is a rename; on
  another mount it is a copy next to the target, then a rename.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from sandbox_agent.errors import AgentError, BadPath, Conflict, TooLarge, Unprocessable, storage_error
from sandbox_agent.fdio import write_all
from sandbox_agent.files import Workspace
from sandbox_agent.placement import NOTHING_WRITTEN, Move, place_all
from sandbox_agent.protocol import FileInfo

FIELD_NAME = "files"
_WRITE_BATCH = 1024 * 1024


class UnsupportedMedia(AgentError):
    status_code = 415


@dataclass
class _Part:
    rel: str
    tmp: Path
    fd: int
    buffer: list[bytes] = field(default_factory=list)
    buffered: int = 0


class _Collector:
    """Turns the parser's synchronous callbacks into a list of actions to await."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Any]] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.actions.append(("begin", dict(self._headers))),
            "on_part_data": lambda data, start, end: self.actions.append(("data", data[start:end])),
            "on_part_end": lambda: self.actions.append(("end", None)),
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""


def clear_staging(root: Path) -> None:
    """Remove what earlier uploads left in the staging root (blocking)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


class Upload:
    def __init__(
        self, workspace: Workspace, staging_root: Path, parent_path: str, *, overwrite: bool, max_bytes: int
    ) -> None:
        self.workspace = workspace
        self.staging_root = staging_root
        self.parent = workspace.resolve(parent_path)
        self.overwrite = overwrite
        self.max_bytes = max_bytes
        self.staging: Path | None = None
        self.parts: list[_Part] = []
        self.current: _Part | None = None

    async def receive(
        self, content_type: str | None, length: str | None, body: AsyncIterator[bytes]
    ) -> list[FileInfo]:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UnsupportedMedia("expected multipart/form-data with a boundary")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise TooLarge(f"upload larger than {self.max_bytes} bytes")
        collector = _Collector()
        parser = MultipartParser(boundary, collector.callbacks())
        try:
            self.staging = await asyncio.to_thread(self._make_staging)
            received = 0
            async for chunk in body:
                received += len(chunk)
                if received > self.max_bytes:
                    raise TooLarge(f"upload larger than {self.max_bytes} bytes")
                self._parse(parser, chunk)
                await self._apply(collector)
            self._parse(parser, None)
            await self._apply(collector)
            if self.current is not None:
                raise BadPath("the multipart body ended inside a part")
            if not self.parts:
                raise Unprocessable(f"no files: send them as multipart parts named {FIELD_NAME!r}")
            return await asyncio.to_thread(self._commit)
        finally:
            await asyncio.to_thread(self._cleanup)

    @staticmethod
    def _parse(parser: MultipartParser, chunk: bytes | None) -> None:
        try:
            if chunk is None:
                parser.finalize()
            else:
                parser.write(chunk)
        except MultipartParseError as error:
            raise BadPath(f"malformed multipart body: {error}") from None

    async def _apply(self, collector: _Collector) -> None:
        actions, collector.actions = collector.actions, []
        for action, value in actions:
            if action == "begin":
                self.current = await self._begin(value)
            elif action == "data" and self.current is not None and value:
                part = self.current
                part.buffer.append(value)
                part.buffered += len(value)
                if part.buffered >= _WRITE_BATCH:
                    await self._drain(part)
            elif action == "end" and self.current is not None:
                await self._drain(self.current)
                self.current = None

    async def _begin(self, headers: dict[bytes, bytes]) -> _Part | None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        if options.get(b"name") != FIELD_NAME.encode():
            return None
        raw_name = options.get(b"filename")
        if not raw_name:
            raise Unprocessable(f"a {FIELD_NAME!r} part has no filename")
        filename = raw_name.decode("utf-8", errors="replace")
        if filename.startswith("/"):
            raise BadPath(f"absolute filenames are refused: {filename!r}")
        rel = f"{self.parent.rel}/{filename}" if self.parent.rel else filename
        target = self.workspace.resolve(rel)
        if target.is_root or not target.rel:
            raise BadPath(f"not a file name: {filename!r}")
        exists = await asyncio.to_thread(os.path.lexists, target.real)
        if exists and not self.overwrite:
            raise Conflict(f"already exists: {target.rel!r}")
        assert self.staging is not None
        tmp = self.staging / f"{len(self.parts)}.part"
        try:
            fd = await asyncio.to_thread(
                os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644
            )
        except OSError as error:
            raise storage_error(error, f"receiving {target.rel!r}", NOTHING_WRITTEN) from None
        part = _Part(target.rel, tmp, fd)
        self.parts.append(part)
        return part

    async def _drain(self, part: _Part) -> None:
        if part.buffer:
            data = b"".join(part.buffer)
            part.buffer, part.buffered = [], 0
            try:
                await asyncio.to_thread(write_all, part.fd, data)
            except OSError as error:
                raise storage_error(error, f"receiving {part.rel!r}", NOTHING_WRITTEN) from None

    # --- blocking steps (worker threads) --------------------------------------

    def _make_staging(self) -> Path:
        try:
            self.staging_root.mkdir(parents=True, exist_ok=True)
            staging = self.staging_root / uuid4().hex
            staging.mkdir()
        except OSError as error:
            raise storage_error(error, "receiving the upload", NOTHING_WRITTEN) from None
        return staging

    def _commit(self) -> list[FileInfo]:
        moves = [Move(part.tmp, self.workspace.resolve(part.rel)) for part in self.parts]
        for part in self.parts:
            fd, part.fd = part.fd, -1
            try:
                os.close(fd)
            except OSError as error:  # a delayed write error (NFS, quota) surfaces at close
                raise storage_error(error, f"receiving {part.rel!r}", NOTHING_WRITTEN) from None
        return place_all(self.workspace, moves, overwrite=self.overwrite)

    def _cleanup(self) -> None:
        for part in self.parts:
            if part.fd >= 0:
                os.close(part.fd)
                part.fd = -1
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
