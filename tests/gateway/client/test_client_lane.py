"""``run()``'s one request through the client's lean lane (gateway/client/_lane.py) against a
real uvicorn gateway on loopback: output and exit code, a kept-alive connection reused, one the
server dropped meanwhile replaced without failing the run, errors mapped as on the httpx path,
a plain JSON answer, cancellation mid-stream, and https / custom transports keeping httpx."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import httpx
import pytest
from client_harness import conversation_behind_proxy
from gw_helpers import Harness
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.client import AsyncConvoyClient, GatewayUnavailable, NotFound, Unauthorized
from gateway.client._transport import Connection

WAIT = {"wait": "true"}


def _wires(client: AsyncConvoyClient) -> set[Any]:
    lane = client._conn._lane
    assert lane is not None, "plain http with no transport goes through the lane"
    return set(lane._all)


async def test_run_goes_through_the_lane_and_reuses_its_connection(process_harness: Harness) -> None:
    async with (
        process_harness.serve() as url,
        AsyncConvoyClient(url) as client,
        await client.create() as convo,
    ):
        first = await convo.run("echo hi; echo oops >&2; exit 3")
        assert (first.exit_code, first.stdout, first.stderr) == (3, "hi\n", "oops\n")
        wires = _wires(client)
        assert len(wires) == 1
        for n in range(3):
            assert (await convo.run(f"echo {n}")).stdout == f"{n}\n"
        assert _wires(client) == wires  # the same kept-alive connection carried every run
        (wire,) = wires
    assert wire.dead and wire.transport.is_closing()  # closed with the client


async def test_a_connection_the_server_dropped_is_not_used(process_harness: Harness) -> None:
    async with process_harness.serve() as url, conversation_behind_proxy(url) as (proxy, convo):
        assert (await convo.run("echo one")).stdout == "one\n"
        (old,) = convo._conn._lane._all  # type: ignore[union-attr]
        assert proxy.cut() >= 1
        for _ in range(100):  # until the loop has seen the drop
            if old.dead:
                break
            await asyncio.sleep(0.01)
        assert old.dead
        assert (await convo.run("echo two")).stdout == "two\n"
        assert old not in convo._conn._lane._all  # type: ignore[union-attr]


async def test_errors_map_as_on_the_httpx_path(harness: Harness) -> None:
    missing = uuid.uuid4()
    async with harness.serve() as url:
        errors = []
        for transport in (None, httpx.AsyncHTTPTransport()):
            conn = Connection(url, None, 30, transport)
            with pytest.raises(NotFound) as caught:
                await conn.open_records("POST", f"/conversation/{missing}/task", params=WAIT, json_body={})
            errors.append((type(caught.value), str(caught.value)))
            await conn.aclose()
        assert errors[0] == errors[1]


async def test_headers_a_plain_json_answer_and_a_non_2xx(serve: Any) -> None:
    seen: list[dict[str, str]] = []

    async def task(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        body = await request.json()
        if request.headers.get("authorization") != "Bearer k":
            return JSONResponse({"detail": "no key"}, status_code=401)
        return JSONResponse({"echo": body, "query": request.url.query})

    app = Starlette(routes=[Route("/conversation/x/task", task, methods=["POST"])])
    async with serve(app) as url:
        conn = Connection(url, "k", 30)
        answer = await conn.open_records("POST", "/conversation/x/task", params=WAIT, json_body={"a": "é"})
        assert not answer.streamed
        assert await answer.json() == {"echo": {"a": "é"}, "query": "wait=true"}
        assert seen[-1]["authorization"] == "Bearer k"
        assert seen[-1]["content-type"] == "application/json"
        assert seen[-1]["user-agent"].startswith("python-httpx/")
        again = await conn.open_records("POST", "/conversation/x/task", params=None, json_body={})
        await again.json()
        assert len(conn._lane._all) == 1  # type: ignore[union-attr]
        await conn.aclose()
        anonymous = Connection(url, None, 30)
        with pytest.raises(Unauthorized, match="no key"):
            await anonymous.open_records("POST", "/conversation/x/task", params=None, json_body={})
        await anonymous.aclose()


async def test_cancelled_mid_stream_the_connection_is_not_reused(process_harness: Harness) -> None:
    async with (
        process_harness.serve() as url,
        AsyncConvoyClient(url) as client,
        await client.create() as convo,
    ):
        await convo.run("true")
        (wire,) = _wires(client)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await convo.run("echo started; sleep 30")
        assert wire.dead and wire.transport.is_closing()
        assert client._conn._lane._idle == []  # type: ignore[union-attr]
        assert (await convo.run("echo after")).stdout == "after\n"


async def test_https_custom_transports_and_proxies_keep_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json={"ok": True})

    mock = Connection("http://gw.test", None, 5, httpx.MockTransport(handler))
    assert mock._lane is None
    answer = await mock.open_records("POST", "/t", params={"wait": "true"}, json_body={})
    assert await answer.json() == {"ok": True}
    assert asked == ["http://gw.test/t?wait=true"]
    assert Connection("https://gw.test", None, 5)._lane is None
    assert Connection("http://gw.test", None, 5)._lane is not None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    assert Connection("http://gw.test", None, 5)._lane is None


async def test_raw_answers_close_delimited_and_closed_while_idle() -> None:
    """A bare server: the first answer is framed by the connection's close; the others carry
    their length and keep-alive, then the server closes the connection while it is idle: the
    next request takes a new connection and succeeds."""
    accepted: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"}")  # the small JSON body
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        n = len(accepted)
        if n == 1:
            writer.write(head + b'connection: close\r\n\r\n{"n": 1}')
        else:
            writer.write(head + b'content-length: 8\r\n\r\n{"n": %d}' % n)
        await writer.drain()
        writer.close()  # a graceful close (FIN), after the answer

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    conn = Connection(url, None, 5)
    try:
        for n in (1, 2, 3):
            got = await conn.open_records("POST", "/t", params=None, json_body={})
            assert await got.json() == {"n": n}
            await asyncio.sleep(0.1)  # the FIN reaches the idle connection
        assert len(accepted) == 3
    finally:
        await conn.aclose()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_gateway_raises_as_on_the_httpx_path() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening: refused
        for transport in (None, httpx.AsyncHTTPTransport()):
            conn = Connection(url, None, 5, transport)
            with pytest.raises(GatewayUnavailable, match=f"cannot reach the gateway at {url}"):
                await conn.open_records("POST", "/t", params=None, json_body={})
            await conn.aclose()
