"""Helpers for the agent tests: a served agent with a client, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from sandbox_agent.app import create_app
from sandbox_agent.protocol import TOKEN_HEADER
from sandbox_agent.settings import AgentSettings
from tests.helpers import eventually

TOKEN = "test-token-1234"
T = TypeVar("T")


def make_settings(root: Path, **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "workspace": root / "workspace",
        "state_dir": root / "state",
        "token": TOKEN,
        "kill_grace_seconds": 2.0,
    }
    values.update(overrides)
    return AgentSettings(**values)


@dataclass
class Served:
    url: str
    client: httpx.AsyncClient
    settings: AgentSettings

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/ws"

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        """Every event (all pages) matching ``params``."""
        found: list[dict[str, Any]] = []
        page_id = None
        while True:
            query = {**params, "limit": 100, **({"page_id": page_id} if page_id else {})}
            response = await self.client.get("/event", params=query)
            response.raise_for_status()
            body = response.json()
            found.extend(body["results"])
            page_id = body["next_page_id"]
            if page_id is None:
                return found

    async def task_done(self, task_id: str, within: float = 60) -> dict[str, Any]:
        async def final() -> dict[str, Any] | None:
            task: dict[str, Any] = (await self.client.get(f"/task/{task_id}")).json()
            return task if task["status"] in ("COMPLETED", "ERROR", "CANCELLED") else None

        return await eventually(final, within=within)

    async def run(self, runnable: dict[str, Any], within: float = 60) -> dict[str, Any]:
        response = await self.client.post("/task", json={"runnable": runnable})
        assert response.status_code == 201, response.text
        return await self.task_done(response.json()["id"], within)

    async def output(self, task_id: str, stream: str = "stdout") -> str:
        events = await self.events(task_id=task_id, type="TaskOutput")
        return "".join(e["detail"]["data"] for e in events if e["detail"]["stream"] == stream)


@asynccontextmanager
async def served(
    serve: Callable[..., Any], settings: AgentSettings, **uvicorn_config: Any
) -> AsyncIterator[Served]:
    async with (
        serve(create_app(settings), **uvicorn_config) as url,
        httpx.AsyncClient(base_url=url, headers={TOKEN_HEADER: TOKEN}, timeout=60) as client,
    ):
        yield Served(url, client, settings)


def ws_headers() -> dict[str, str]:
    return {TOKEN_HEADER: TOKEN}


def seqs(frames: list[str]) -> list[int]:
    return [json.loads(frame)["seq"] for frame in frames]


def append_bytes(path: Path, data: bytes) -> None:
    """Append raw bytes to a file (what a crash or a foreign writer leaves behind)."""
    with open(path, "ab") as file:
        file.write(data)


def multipart_head(boundary: str, filename: str, field: str = "files") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def multipart_body(boundary: str, files: dict[str, bytes], field: str = "files") -> bytes:
    """A whole multipart body; filenames are sent as given (with their ``/``)."""
    body = b"".join(multipart_head(boundary, name, field) + data + b"\r\n" for name, data in files.items())
    return body + f"--{boundary}--\r\n".encode()


class RawWebSocket:
    """A minimal WebSocket client over a plain asyncio stream whose reading the test controls.

    The ``websockets`` client keeps draining the socket into its own buffers, so it
    cannot play a consumer that stops reading; this one reads nothing until asked.
    Server frames are unmasked: ``(opcode, payload)``; opcode 8 is close.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, base_url: str, path: str, headers: dict[str, str]) -> RawWebSocket:
        import base64
        import os

        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return first & 0x0F, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def process_gone(pid: int) -> bool:
    """Gone, or a zombie waiting for a reaper that is not us."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return all(process_gone(int(pid)) for pid in os.listdir("/proc") if pid.isdigit() and _pgrp(pid) == pgid)


def _pgrp(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return int(file.read().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None
