"""Files of one conversation's workspace: upload, download (files or whole trees), search, info,
mkdir, touch, delete. Transfers stream in chunks; local disk I/O runs off the event loop.

Workspace paths are relative to the workspace root and ``/``-separated; ``""`` is the root.
Directory transfers behave like ``cp -r``: the source directory's own name is kept under
the destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote
from uuid import UUID

from gateway.client._multipart import MultipartBody, Part, Progress, collect
from gateway.client._transport import Connection, Query, iter_bytes, parse_json, parse_list, parse_model
from sandbox_agent.protocol import Count, FileInfo

#: Upload batches stay under these (several requests for a big tree; one file is never split).
BATCH_FILES = 500
BATCH_BYTES = 512 * 1024 * 1024


class AsyncFiles:
    """The file routes of one conversation (``handle.files``)."""

    def __init__(self, conn: Connection, conversation_id: UUID) -> None:
        self._conn = conn
        self._base = f"/conversation/{conversation_id}"

    def _url(self, route: str, path: str) -> str:
        return f"{self._base}/{route}/{_quote_path(path)}"

    # --- metadata ---------------------------------------------------------------------

    async def info(self, path: str) -> FileInfo:
        """The file or directory at ``path``; :class:`NotFound` if there is none."""
        return await self._conn.get_model(self._url("file", path), FileInfo)

    async def mkdir(self, path: str) -> FileInfo:
        """Create a directory (and its parents)."""
        return parse_model(FileInfo, parse_json(await self._conn.request("POST", self._url("dir", path))))

    async def touch(self, path: str) -> FileInfo:
        """Create an empty file (or update the time of an existing one)."""
        return parse_model(FileInfo, parse_json(await self._conn.request("POST", self._url("file", path))))

    async def delete(self, path: str) -> None:
        """Delete a file or a directory with everything in it."""
        await self._conn.request("DELETE", self._url("file", path))

    def search(
        self, pattern: str | None = None, *, q: str | None = None, path: str | None = None, limit: int = 100
    ) -> AsyncGenerator[FileInfo, None]:
        """Every file and directory matching a glob ``pattern`` or a substring ``q``, under ``path``."""
        params: Query = {"pattern": pattern, "q": q, "path": path, "limit": limit}
        return self._conn.pages(f"{self._base}/file-search", FileInfo, params)

    async def count(
        self, pattern: str | None = None, *, q: str | None = None, path: str | None = None
    ) -> int:
        params: Query = {"pattern": pattern, "q": q, "path": path}
        return (await self._conn.get_model(f"{self._base}/file-count", Count, params)).count

    # --- upload -----------------------------------------------------------------------

    async def upload(
        self,
        sources: Sequence[str | os.PathLike[str]],
        dest: str = "",
        *,
        overwrite: bool = True,
        progress: Progress | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> list[FileInfo]:
        """Upload local files and directories into the workspace directory ``dest``.

        Answers the FileInfo of every file written. ``on_total`` is told the byte total first,
        ``progress`` each chunk sent. ``overwrite=False`` makes an existing file a :class:`Conflict`.
        """
        parts, empty_dirs = await asyncio.to_thread(collect, sources)
        if on_total is not None:
            on_total(sum(part.size for part in parts))
        written: list[FileInfo] = []
        for batch in _batches(parts):
            body = MultipartBody(batch, progress=progress)
            response = await self._conn.request(
                "POST",
                self._url("upload", dest),
                params={"overwrite": "false"} if not overwrite else None,
                content=body,
                headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
            )
            written.extend(parse_list(FileInfo, parse_json(response)))
        for directory in empty_dirs:
            await self.mkdir(_join(dest, directory))
        return written

    # --- download ---------------------------------------------------------------------

    async def stream(self, path: str) -> AsyncGenerator[bytes, None]:
        """The content of the file at ``path``, chunk by chunk."""
        async with self._conn.stream("GET", self._url("file-content", path)) as response:
            async for chunk in iter_bytes(response):
                yield chunk

    async def read_bytes(self, path: str) -> bytes:
        """The whole content of a (small) file, in memory."""
        return b"".join([chunk async for chunk in self.stream(path)])

    async def download(
        self,
        src: str,
        dest: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> list[Path]:
        """Download the file or directory ``src`` to the local ``dest`` (``cp -r`` rules: into
        ``dest`` when it is an existing directory). Answers the local files written."""
        root = await self.info(src)
        target = Path(dest)
        if await asyncio.to_thread(target.is_dir):
            target = target / (root.name or "workspace")
        if not root.is_dir:
            if on_total is not None:
                on_total(root.size)
            await self._fetch(root.path, target, progress)
            return [target]
        entries = [entry async for entry in self.search(path=root.path)]
        files = [entry for entry in entries if not entry.is_dir]
        if on_total is not None:
            on_total(sum(entry.size for entry in files))
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        prefix = PurePosixPath(root.path)
        written: list[Path] = []
        for entry in sorted(entries, key=lambda e: e.path):
            local = target.joinpath(*_relative(PurePosixPath(entry.path), prefix).parts)
            if entry.is_dir:
                await asyncio.to_thread(local.mkdir, parents=True, exist_ok=True)
            else:
                await self._fetch(entry.path, local, progress)
                written.append(local)
        return written

    async def _fetch(self, path: str, local: Path, progress: Progress | None) -> None:
        """Stream one file to ``local`` through a temporary sibling, renamed when complete."""
        await asyncio.to_thread(local.parent.mkdir, parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.convoy-part")
        handle = await asyncio.to_thread(open, partial, "wb")
        try:
            try:
                async for chunk in self.stream(path):
                    await asyncio.to_thread(handle.write, chunk)
                    if progress is not None:
                        progress(len(chunk))
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, partial, local)
        except BaseException:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(partial.unlink)
            raise


def _quote_path(path: str) -> str:
    """A workspace path for a URL: ``/``-separated, each segment percent-encoded."""
    return quote(path.strip("/"), safe="/")


def _relative(path: PurePosixPath, prefix: PurePosixPath) -> PurePosixPath:
    """``path`` under ``prefix``; refuses anything that would land outside the download target."""
    relative = path.relative_to(prefix) if str(prefix) not in ("", ".") else path
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"refusing to write {path} outside the download directory")
    return relative


def _join(dest: str, name: str) -> str:
    return f"{dest.strip('/')}/{name}" if dest.strip("/") else name


def _batches(parts: list[Part]) -> list[list[Part]]:
    batches: list[list[Part]] = []
    current: list[Part] = []
    size = 0
    for part in parts:
        if current and (len(current) >= BATCH_FILES or size + part.size > BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(part)
        size += part.size
    if current:
        batches.append(current)
    return batches
