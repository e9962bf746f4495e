"""``GET /file-content/{path}``: a file streamed from disk, with single HTTP Ranges.

Contract: 200 with the whole file, or 206 with ``Content-Range`` for one
``bytes=`` range (``a-b``, ``a-``, ``-n``); 416 with ``Content-Range: bytes */size``
when the range starts past the end. Several ranges or a malformed header are
ignored (the whole file is sent), as RFC 9110 allows. ``If-Range`` with a
stale validator also sends the whole file. Served by the agent's own protocol, a GET's body
goes with ``sendfile`` (:mod:`sandbox_agent.zerocopy`: no copy through Python); elsewhere
(another ASGI server, HEAD) reads are ``pread`` calls in a worker thread, one chunk ahead
of the send. Memory stays flat whatever the size.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import stat
from email.utils import formatdate
from pathlib import Path

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox_agent.errors import BadPath, NotFound, error_response
from sandbox_agent.files import Workspace
from sandbox_agent.zerocopy import SENDFILE

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Positions past any file size: more digits than this are read as this (int() of thousands
#: of digits is slow, then refused by Python).
_FAR = 10**18


def _position(digits: str) -> int:
    return int(digits) if len(digits) < 19 else _FAR


class Unsatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)``, ``None`` to ignore the header; raises :class:`Unsatisfiable`."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        length = _position(last)
        if length == 0 or size == 0:
            raise Unsatisfiable()
        return max(size - length, 0), size
    start = _position(first)
    end = _position(last) + 1 if last else size
    if last and end <= start:
        return None  # a-b with b < a is syntactically invalid: ignore it
    if start >= size:
        raise Unsatisfiable()
    return start, min(end, size)


class FileRangeResponse(Response):
    """Sends ``[start, end)`` of an open file descriptor and always closes it.

    The next chunk is read while the current one is being sent: a read waits for a
    worker thread, a send for the client to take the bytes, and done one after the
    other each leaves the other side idle (the socket ran dry while the agent read,
    which is what made a direct download slower than one through the gateway, whose
    proxy reads ahead of its client). At most two chunks are held.
    """

    def __init__(self, fd: int, start: int, end: int, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=status_code, headers=headers)
        self.fd, self.start, self.end = fd, start, end

    def _read(self, position: int) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(
            asyncio.to_thread(os.pread, self.fd, min(CHUNK, self.end - position), position)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = scope.get("extensions", {}).get(SENDFILE)
        if sender is not None and scope.get("method") == "GET" and self.end > self.start:
            try:
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                await sender(self.fd, self.start, self.end - self.start)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                os.close(self.fd)
            return
        await self._chunked(send)

    async def _chunked(self, send: Send) -> None:
        ahead: asyncio.Future[bytes] | None = None
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            position = self.start
            ahead = self._read(position) if position < self.end else None
            while ahead is not None:
                data = await ahead
                ahead = None
                if not data:
                    break  # the file shrank meanwhile; the client sees a short body
                position += len(data)
                if position < self.end:
                    ahead = self._read(position)
                await send({"type": "http.response.body", "body": data, "more_body": position < self.end})
            if position < self.end or self.start == self.end:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if ahead is not None:  # the thread may still be reading: the fd stays open until it is done
                await asyncio.wait({ahead})
            os.close(self.fd)


def _open(path: Path, rel: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"no such file: {rel!r}") from None
    except IsADirectoryError:
        raise BadPath(f"a directory has no content: {rel!r}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadPath(f"not a regular file: {rel!r}")
    return fd, st


async def file_response(
    workspace: Workspace, path: str, range_header: str | None, if_range: str | None
) -> Response:
    target = workspace.resolve(path)
    fd, st = await asyncio.to_thread(_open, target.real, target.rel)
    size = st.st_size
    etag = f'"{st.st_mtime_ns:x}-{size:x}"'
    modified = formatdate(st.st_mtime, usegmt=True)
    headers = {
        "accept-ranges": "bytes",
        "etag": etag,
        "last-modified": modified,
        "content-type": mimetypes.guess_type(target.real.name)[0] or "application/octet-stream",
    }
    start, end, status = 0, size, 200
    if range_header and (if_range is None or if_range in (etag, modified)):
        try:
            chosen = parse_range(range_header, size)
        except Unsatisfiable:
            os.close(fd)
            return error_response(
                416, f"range not satisfiable for {size} bytes", {"content-range": f"bytes */{size}"}
            )
        if chosen is not None:
            start, end, status = chosen[0], chosen[1], 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    headers["content-length"] = str(end - start)
    return FileRangeResponse(fd, start, end, status, headers)
