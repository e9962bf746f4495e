"""``POST /upload/{parent_path}``: multipart files streamed to disk.

Contract:
- The body is parsed as it arrives (python-multipart's streaming parser); each
  part named ``files`` goes, in chunks, to a temporary file under the
  workspace's ``.convoy/uploads/``. Memory stays flat whatever the size.
- A part's filename is relative to ``parent_path`` and may contain ``/``
  subdirectories (created as needed); it passes the workspace jail.
- Only once the whole body is in are the files moved into place, each with an
  atomic rename: a failed upload (bad part, 409, 413, a dropped connection)
  leaves the workspace as it was. Existing files are replaced unless
  ``overwrite=false`` (409). Parts with another field name are ignored.
- More than ``max_bytes`` of body is 413.
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

from sandbox_agent.errors import AgentError, BadPath, Conflict, TooLarge, Unprocessable
from sandbox_agent.files import Workspace, file_info, make_parents
from sandbox_agent.protocol import FileInfo

FIELD_NAME = "files"
STAGING_DIR = ".convoy/uploads"
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


class Upload:
    def __init__(self, workspace: Workspace, parent_path: str, *, overwrite: bool, max_bytes: int) -> None:
        self.workspace = workspace
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
        fd = await asyncio.to_thread(
            os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644
        )
        part = _Part(target.rel, tmp, fd)
        self.parts.append(part)
        return part

    async def _drain(self, part: _Part) -> None:
        if part.buffer:
            data = b"".join(part.buffer)
            part.buffer, part.buffered = [], 0
            await asyncio.to_thread(_write_all, part.fd, data)

    # --- blocking steps (worker threads) --------------------------------------

    def _make_staging(self) -> Path:
        base = self.workspace.resolve(STAGING_DIR)
        make_parents(self.workspace, base.real)
        staging = base.real / uuid4().hex
        staging.mkdir()
        return staging

    def _commit(self) -> list[FileInfo]:
        targets = [self.workspace.resolve(part.rel) for part in self.parts]
        for target in targets:  # check everything before moving anything
            if target.real.is_dir():
                raise Conflict(f"a directory is in the way: {target.rel!r}")
            if not self.overwrite and os.path.lexists(target.real):
                raise Conflict(f"already exists: {target.rel!r}")
        for part, target in zip(self.parts, targets, strict=True):
            os.close(part.fd)
            part.fd = -1
            make_parents(self.workspace, target.real.parent)
            try:
                os.replace(part.tmp, target.real)
            except OSError as error:
                if error.errno != 18:  # EXDEV: the target is on another mount
                    raise
                shutil.move(part.tmp, target.real)
        return [file_info(target.real, target.rel) for target in dict((t.rel, t) for t in targets).values()]

    def _cleanup(self) -> None:
        for part in self.parts:
            if part.fd >= 0:
                os.close(part.fd)
                part.fd = -1
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
