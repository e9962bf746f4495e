"""A streamed ``multipart/form-data`` body for uploads: files are read from disk chunk by chunk
(off the event loop), never whole into memory, and the total length is known up front so the
request carries a ``Content-Length``."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CHUNK = 256 * 1024

#: Called with the number of bytes of file content just sent.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Part:
    """One file: ``name`` is its path under the upload's destination (``/``-separated)."""

    name: str
    source: Path
    size: int


def _quote(name: str) -> str:
    # Same escaping browsers and httpx use for a filename parameter.
    escaped = name.replace("\\", "\\\\").replace('"', "%22")
    return "".join(ch if ord(ch) >= 0x20 or ch == "\x1b" else f"%{ord(ch):02X}" for ch in escaped)


class MultipartBody:
    """``async for chunk in body`` yields the encoded form; ``content_type``/``length`` for headers."""

    def __init__(self, parts: Sequence[Part], field: str = "files", progress: Progress | None = None) -> None:
        self.parts = list(parts)
        self.boundary = secrets.token_hex(16)
        self.field = field
        self.progress = progress
        self._heads = [self._head(part) for part in self.parts]
        self._tail = f"--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        framing = sum(len(head) + 2 for head in self._heads)  # +2: CRLF after each part's content
        return framing + sum(part.size for part in self.parts) + len(self._tail)

    def _head(self, part: Part) -> bytes:
        kind = mimetypes.guess_type(part.name)[0] or "application/octet-stream"
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{self.field}"; filename="{_quote(part.name)}"\r\n'
            f"Content-Type: {kind}\r\n\r\n"
        ).encode()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for head, part in zip(self._heads, self.parts, strict=True):
            yield head
            sent = 0
            async for chunk in _read(part.source):
                sent += len(chunk)
                if sent > part.size:
                    raise OSError(f"{part.source} grew while it was being uploaded")
                if self.progress is not None:
                    self.progress(len(chunk))
                yield chunk
            if sent != part.size:
                raise OSError(f"{part.source} shrank while it was being uploaded")
            yield b"\r\n"
        yield self._tail


async def _read(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def collect(sources: Sequence[str | os.PathLike[str]]) -> tuple[list[Part], list[str]]:
    """The files to send for ``sources`` (files, or directories taken whole with their own name,
    like ``cp -r``), and the empty directories to create (relative names). Blocking: run it
    in a thread. Symlinks are followed for files given by name and skipped inside directories."""
    parts: list[Part] = []
    empty_dirs: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            base = path.resolve().name or "root"
            for root, dirs, files in os.walk(path):
                dirs.sort()
                rel_root = Path(root).relative_to(path)
                prefix = (Path(base) / rel_root).as_posix()
                regular = [
                    f
                    for f in sorted(files)
                    if (Path(root) / f).is_file() and not (Path(root) / f).is_symlink()
                ]
                for name in regular:
                    file_path = Path(root) / name
                    parts.append(Part(f"{prefix}/{name}", file_path, file_path.stat().st_size))
                if not regular and not dirs:
                    empty_dirs.append(prefix)
        elif path.is_file():
            parts.append(Part(path.name, path, path.stat().st_size))
        else:
            raise FileNotFoundError(f"{source}: no such file or directory")
    return parts, empty_dirs
