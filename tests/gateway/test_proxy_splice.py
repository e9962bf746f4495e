"""Large downloads relayed with ``splice`` (gateway.splice): byte for byte, ranges and errors
through a real gateway on the process runtime, counted in the metrics; against a stand-in
agent whose answer never ends, that a client going away or never reading closes the agent's
connection; and the relay itself on socket pairs."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gw_helpers import Harness, Serve, base_settings, create_ready
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from test_metrics import scrape, value
from test_proxy import StandIn, StandInRuntime

from gateway import splice
from gateway.app import create_app
from gateway.server import uvicorn_options

MiB = 1024 * 1024
SIZE = 24 * MiB + 12345  # an odd size: the relay's last pipe-full is a partial one


@pytest.fixture
def relayed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes each ``splice`` relay moved (empty: nothing went by splice)."""
    moved: list[int] = []
    real = splice.pipe_relay

    async def counting(source: int, sink: int, count: int, stall_timeout: float) -> int:
        sent = await real(source, sink, count, stall_timeout)
        moved.append(sent)
        return sent

    monkeypatch.setattr(splice, "pipe_relay", counting)
    return moved


async def test_a_large_download_is_spliced_byte_for_byte(
    process_harness: Harness, relayed: list[int]
) -> None:
    async with process_harness.client() as client:
        cid = await create_ready(client)
        data = os.urandom(SIZE)
        uploaded = await client.post(f"/conversation/{cid}/upload/d", files=[("files", ("big.bin", data))])
        assert uploaded.status_code == 201, uploaded.text
        base = f"/conversation/{cid}/file-content"

        whole = await client.get(f"{base}/d/big.bin")
        assert whole.status_code == 200
        assert whole.headers["content-length"] == str(SIZE)
        assert whole.headers["x-content-type-options"] == "nosniff"
        assert whole.content == data
        assert sum(relayed) > SIZE - 2 * MiB  # all but what came with the head went by splice

        ranged = await client.get(f"{base}/d/big.bin", headers={"Range": f"bytes=1000-{SIZE - 7}"})
        assert ranged.status_code == 206
        assert ranged.content == data[1000 : SIZE - 6]

        head = await client.head(f"{base}/d/big.bin")  # GET only, as the agent's route
        assert head.status_code == 405 and head.content == b""
        missing = await client.get(f"{base}/nothing.bin")
        assert missing.status_code == 404 and "detail" in missing.json()

        again = await client.get(f"{base}/d/big.bin")  # the connection was kept after a whole answer
        assert again.content == data
        samples = await scrape(client)
        assert value(samples, "convoy_proxied_bytes_total", direction="down") >= 3 * SIZE - 1006


@pytest.fixture
async def endless(serve: Serve) -> AsyncIterator[tuple[StandIn, str]]:
    """A stand-in agent whose every file claims a terabyte and never ends (``stream_closed``
    is set once its answer was closed)."""
    made = StandIn()

    async def content(_: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"y" * 65536
                    await asyncio.sleep(0)
            finally:
                made.stream_closed.set()

        return StreamingResponse(chunks(), headers={"Content-Length": str(1 << 40)})

    async with serve(Starlette(routes=[Route("/file-content/{path:path}", content)])) as url:
        yield made, url


async def _gateway_on(serve: Serve, tmp_path: Path, upstream: str, agent: StandIn, **settings: Any) -> Any:
    settings_made = base_settings(tmp_path, **settings)
    runtime = StandInRuntime(upstream, agent)
    return serve(create_app(settings_made, runtime), **uvicorn_options(settings_made))  # type: ignore[arg-type]


async def test_a_client_leaving_mid_splice_closes_the_upstream(
    endless: tuple[StandIn, str], serve: Serve, tmp_path: Path, relayed: list[int]
) -> None:
    agent, upstream = endless
    async with (
        await _gateway_on(serve, tmp_path, upstream, agent) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        cid = (await client.post("/conversation", json={})).json()["id"]
        await asyncio.sleep(0.1)
        async with client.stream("GET", f"/conversation/{cid}/file-content/endless") as response:
            assert response.status_code == 200
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received > 8 * MiB:
                    break
        await asyncio.wait_for(agent.stream_closed.wait(), 30)
        assert relayed  # it went by splice (the relay ended when the client left)
        assert (await client.get(f"/conversation/{cid}")).status_code == 200


async def test_a_spliced_download_nobody_reads_releases_the_upstream(
    endless: tuple[StandIn, str], serve: Serve, tmp_path: Path, relayed: list[int]
) -> None:
    agent, upstream = endless
    async with (
        await _gateway_on(serve, tmp_path, upstream, agent, proxy_stall_timeout=1.0) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        cid = (await client.post("/conversation", json={})).json()["id"]
        await asyncio.sleep(0.1)
        port = int(url.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing: a tiny window
        sock.connect(("127.0.0.1", port))
        try:
            request = f"GET /conversation/{cid}/file-content/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            sock.sendall(request.encode())
            await asyncio.wait_for(agent.stream_closed.wait(), 30)
        finally:
            sock.close()
        assert relayed and relayed[0] < 1 << 40


def _pair() -> tuple[socket.socket, socket.socket]:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    return left, right


async def test_pipe_relay_moves_exactly_count_bytes_and_stops_at_an_early_end() -> None:
    source_out, source = _pair()
    sink, sink_in = _pair()
    try:
        source_out.sendall(b"a" * 100_000 + b"NEXT")
        moved = await splice.pipe_relay(source.fileno(), sink.fileno(), 100_000, 5.0)
        assert moved == 100_000
        assert source.recv(10) == b"NEXT"  # nothing past count was taken
        received = b""
        while len(received) < moved:
            received += await asyncio.get_running_loop().sock_recv(sink_in, 1 << 20)
        assert received == b"a" * 100_000

        source_out.sendall(b"b" * 10)
        source_out.close()  # the source ends before count
        assert await splice.pipe_relay(source.fileno(), sink.fileno(), 1000, 5.0) == 10
    finally:
        for end in (source, sink, sink_in):
            end.close()


async def test_a_cancelled_relay_leaves_no_descriptor_or_reader_behind() -> None:
    source_out, source = _pair()
    sink, sink_in = _pair()
    try:
        before = len(os.listdir("/proc/self/fd"))
        relay = asyncio.create_task(splice.pipe_relay(source.fileno(), sink.fileno(), 1000, 5.0))
        await asyncio.sleep(0.1)  # it waits for the source, its pipe open
        assert len(os.listdir("/proc/self/fd")) == before + 2
        relay.cancel()
        with pytest.raises(asyncio.CancelledError):
            await relay
        assert len(os.listdir("/proc/self/fd")) == before
        assert not asyncio.get_running_loop().remove_reader(source.fileno())
    finally:
        for end in (source_out, source, sink, sink_in):
            end.close()


class _Transport:
    def __init__(self, ssl_object: object) -> None:
        self.ssl_object = ssl_object

    def get_extra_info(self, name: str) -> object:
        return self.ssl_object if name == "ssl_object" else None


class _Cycle:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope


def test_splice_is_offered_to_plain_requests_only() -> None:
    plain: dict[str, Any] = {}
    tls: dict[str, Any] = {}
    upgrade: dict[str, Any] = {}
    splice.offer_splice(plain, _Transport(None), _Cycle(plain))
    splice.offer_splice(tls, _Transport(object()), _Cycle(tls))  # the socket carries TLS records
    splice.offer_splice(upgrade, _Transport(None), _Cycle({}))  # the cycle is an earlier request's
    assert isinstance(plain["extensions"][splice.SPLICE], splice.ClientSplice)
    assert tls == {} and upgrade == {}
