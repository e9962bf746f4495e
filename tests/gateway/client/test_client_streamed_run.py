"""``run()`` in one round trip (``POST .../task?wait=true``), the same result when that answer
breaks off (the run follows the log from where it was), and ``create()`` learning READY from
the conversation's WebSocket rather than by polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gw_helpers import Harness

from gateway.client import AsyncConvoyClient, ConvoyClient, shell
from gateway.client._transport import Connection


class Counting(httpx.AsyncBaseTransport):
    """The real network transport, recording each request; ``cut_after`` bytes into a streamed
    (``?wait=true``) answer, the connection breaks."""

    def __init__(self, cut_after: int | None = None) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.requests: list[tuple[str, str]] = []
        self.local_addresses: list[Any] = []  # the client side of the connection of each request
        self._cut_after = cut_after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, f"{request.url.path}?{request.url.query.decode()}"))
        response = await self._inner.handle_async_request(request)
        stream = response.extensions.get("network_stream")
        self.local_addresses.append(stream.get_extra_info("client_addr") if stream else None)
        if self._cut_after is None or b"wait=true" not in request.url.query:
            return response
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Cut(response, self._cut_after)
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Cut(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._response, self._limit = response, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self._response.aiter_raw():
            if sent + len(chunk) > self._limit:
                yield chunk[: self._limit - sent]
                raise httpx.ReadError("cut by the test")
            sent += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


@pytest.fixture
def no_websockets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every WebSocket the client opens (they still open)."""
    opened: list[str] = []
    original = Connection.connect_ws

    async def connect_ws(self: Connection, path: str, params: Any = None) -> Any:
        opened.append(path)
        return await original(self, path, params)

    monkeypatch.setattr(Connection, "connect_ws", connect_ws)
    return opened


async def test_run_is_one_request_and_no_websocket(harness: Harness, no_websockets: list[str]) -> None:
    transport = Counting()
    async with (
        harness.serve() as url,
        AsyncConvoyClient(url, transport=transport) as client,
        await client.create() as convo,
    ):
        transport.requests.clear()
        no_websockets.clear()
        result = await convo.run("echo out; echo err >&2; exit 3")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert transport.requests == [("POST", f"/conversation/{convo.id}/task?wait=true")]
        assert no_websockets == []


async def test_runs_one_after_another_share_one_connection(harness: Harness) -> None:
    """The answer is read to its end, so its keep-alive connection carries the next run."""
    transport = Counting()
    async with (
        harness.serve() as url,
        AsyncConvoyClient(url, transport=transport) as client,
        await client.create() as convo,
    ):
        transport.local_addresses.clear()
        for n in range(5):
            assert (await convo.run(f"echo {n}")).stdout == f"{n}\n"
        assert len(transport.local_addresses) == 5 and None not in transport.local_addresses
        assert len(set(transport.local_addresses)) == 1, transport.local_addresses


async def test_a_stream_that_breaks_off_is_resumed_from_the_log(harness: Harness) -> None:
    # Cut just after the first line (the task): everything else comes from following the log.
    transport = Counting(cut_after=400)
    async with (
        harness.serve() as url,
        AsyncConvoyClient(url, transport=transport) as client,
        await client.create() as convo,
    ):
        result = await convo.run(["seq", "1", "3000"], check=True)
        assert result.stdout.splitlines() == [str(n) for n in range(1, 3001)]
        assert result.task.status.value == "COMPLETED"


async def test_the_blocking_client_streams_a_run_too(harness: Harness) -> None:
    async with harness.serve() as url:

        def blocking() -> tuple[list[str], str, int | None]:
            with ConvoyClient(url) as client, client.create() as convo:
                run = convo.start_streaming(shell("echo one; echo two"))
                chunks = [chunk.data for chunk in run.output()]
                result = run.wait()
                run.close()
                return chunks, result.stdout, result.exit_code

        chunks, stdout, code = await asyncio.to_thread(blocking)
        assert ("".join(chunks), stdout, code) == ("one\ntwo\n", "one\ntwo\n", 0)


async def test_create_learns_ready_from_the_websocket_not_by_polling(
    harness: Harness, no_websockets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = harness.runtime.start

    async def slow_start(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)  # STARTING for a while: the client must wait for READY
        return await start(*args, **kwargs)

    monkeypatch.setattr(harness.runtime, "start", slow_start)
    transport = Counting()
    async with harness.serve() as url, AsyncConvoyClient(url, transport=transport) as client:
        seen: list[str] = []
        async with await client.create(on_status=lambda info: seen.append(info.status.value)) as convo:
            assert convo.status.value == "READY" and convo.info.phase is None
            assert seen[0] == "STARTING" and seen[-1] == "READY"
            assert no_websockets == [f"/conversation/{convo.id}"]
            assert [method for method, _ in transport.requests] == ["POST"], "no polling"
