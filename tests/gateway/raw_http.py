"""HTTP/1.1 on a plain socket, for the tests that send what no client library would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gw_helpers import TIMEOUT


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawHttp:
    """One HTTP/1.1 connection on a plain socket: requests exactly as written (bad
    headers, huge ones, a body never sent), answers read as they come. Reusing one
    shows whether the server kept the connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    @asynccontextmanager
    async def connect(cls, base_url: str) -> AsyncIterator[RawHttp]:
        port = int(base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        try:
            yield cls(reader, writer)
        finally:
            writer.close()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> RawResponse:
        head = {"Host": "127.0.0.1", "Content-Length": str(len(body)), **(headers or {})}
        lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
        await self.send(f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body)
        return await self.response()

    async def response(self, within: float = TIMEOUT) -> RawResponse:
        async with asyncio.timeout(within):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return RawResponse(int(status_line.split()[1]), headers, body)

    async def closed(self, within: float = TIMEOUT) -> bool:
        """Reads until the server closes the connection (True), or ``within`` passes (False)."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(1 << 16):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True
