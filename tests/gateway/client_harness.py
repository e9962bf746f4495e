"""Helpers for the client and CLI tests: a TCP proxy whose connections a test can cut, the
``convoy`` command as an asyncio subprocess, and a random directory tree."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from gateway.client import AsyncConversationHandle, AsyncConvoyClient
from tests.helpers import TIMEOUT


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; :meth:`cut` aborts every open connection
    (both sides see a dropped TCP connection, as after a network failure)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> int:
        """Abort every open connection; answers how many there were."""
        links = list(self._links)
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()
        self.cuts += 1
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        with contextlib.suppress(OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()


@contextlib.asynccontextmanager
async def conversation_behind_proxy(url: str) -> AsyncIterator[tuple[TcpProxy, AsyncConversationHandle]]:
    """A new conversation on the gateway at ``url``, driven by a client whose connections pass
    a :class:`TcpProxy` the test can cut; deleted on exit."""
    async with (
        TcpProxy(int(url.rsplit(":", 1)[1])) as proxy,
        AsyncConvoyClient(proxy.url) as client,
        await client.create() as convo,
    ):
        yield proxy, convo


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def cli_env(url: str, key: str | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONVOY_")}
    env["CONVOY_URL"] = url
    if key is not None:
        env["CONVOY_API_KEY"] = key
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


async def start_cli(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """``convoy ARGS`` as a subprocess with piped stdout/stderr (so: not a terminal)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from gateway.cli import main; main()",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_cli(*args: str, url: str, key: str | None = None, timeout: float = TIMEOUT) -> CliResult:  # noqa: ASYNC109
    process = await start_cli(*args, env=cli_env(url, key))
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())


def make_tree(root: Path, seed: int = 7) -> dict[str, bytes]:
    """A directory tree with nested, empty, binary, large and oddly named files; answers
    ``{relative path: content}`` of its files."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {
        "README.txt": b"hello\n",
        "empty.bin": b"",
        "a/b/c/deep.txt": b"deep\n" * 100,
        "a/random.bin": rng.randbytes(3 * 1024 * 1024 + 17),
        "spaces and ünïcode/naïve file.txt": "héllo wörld\n".encode(),
        "a/b/every-byte.bin": bytes(range(256)) * 64,
    }
    for index in range(30):
        files[f"many/file-{index:02d}.dat"] = rng.randbytes(rng.randrange(0, 20000))
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "empty-dir" / "inner").mkdir(parents=True)
    return files


def read_tree(root: Path) -> tuple[dict[str, bytes], set[str]]:
    """``({relative file path: content}, {relative directory paths})`` under ``root``."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            dirs.add(rel)
        else:
            files[rel] = path.read_bytes()
    return files, dirs
