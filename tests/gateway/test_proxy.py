"""The proxy against a stand-in agent whose behaviour the test controls (real HTTP
and WebSocket on loopback): what is forwarded and what not, upstream failures,
closing upstream on client disconnect, close codes through the WebSocket proxy."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest
from gw_helpers import (
    ADMIN_KEY,
    Serve,
    auth,
    base_settings,
    close_code,
    context_of_app,
    create_ready,
    keyed,
    recv_json,
    ws_connect,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.app import create_app
from gateway.runtimes.base import SandboxHandle, SandboxSpec, SandboxState, Template
from gateway.runtimes.template_catalog import DefaultTemplateOnly
from gateway.upstream import UpstreamPath
from sandbox_agent.protocol import TOKEN_HEADER, WS_CLOSE_TOO_SLOW, WS_CLOSE_UPSTREAM_UNAVAILABLE

#: The size of the stand-in's chunked file listing (more than the proxy reads whole).
LISTING = 4 * 1024 * 1024


@dataclass
class StandIn:
    """The stand-in agent's knobs and what it saw."""

    token: str = ""
    seen: dict[str, Any] = field(default_factory=dict)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    ws_close: int | None = 1000  # None: drop the connection without a close frame

    def app(self) -> Starlette:
        async def agent_info(request: Request) -> Response:
            self.seen = {
                "headers": {
                    k.lower(): v for k, v in request.headers.items() if k.lower() != TOKEN_HEADER.lower()
                },
                "token_ok": request.headers.get(TOKEN_HEADER) == self.token,
                "query": request.url.query,
            }
            response = JSONResponse({"ok": True})
            response.headers["Set-Cookie"] = "session=upstream"
            response.headers[TOKEN_HEADER] = self.token
            return response

        async def slow(_: Request) -> Response:
            await asyncio.sleep(5)
            return JSONResponse({})

        async def endless(_: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                try:
                    while True:
                        yield b"x" * 65536
                        await asyncio.sleep(0)
                finally:
                    self.stream_closed.set()

            return StreamingResponse(chunks(), media_type="application/octet-stream")

        async def listing(request: Request) -> Response:
            self.seen = {
                "method": request.method,
                "token_ok": request.headers.get(TOKEN_HEADER) == self.token,
            }

            async def pieces() -> AsyncIterator[bytes]:
                for _ in range(LISTING // 65536):
                    yield b"z" * 65536

            headers = {"Keep-Alive": "timeout=5", "X-Agent": "kept"}
            return StreamingResponse(pieces(), media_type="application/json", headers=headers)

        async def status(_: Request) -> Response:
            return JSONResponse({}, status_code=201)

        async def ws(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_text('{"seq": 1, "detail": {"type": "hello"}}')
            if self.ws_close is None:
                # An error after the handshake: uvicorn drops the connection without a close frame.
                raise RuntimeError("the stand-in drops the connection")
            if self.ws_close == 1005:  # a close frame without a code
                await websocket.send({"type": "websocket.close"})
                return
            await websocket.close(self.ws_close)

        return Starlette(
            routes=[
                Route("/agent-info", agent_info),
                Route("/event", slow),
                Route("/file-content/{path:path}", endless),
                Route("/file/{path:path}", listing, methods=["GET", "DELETE"]),
                Route("/status", status, methods=["POST"]),
                WebSocketRoute("/ws", ws),
            ]
        )


class StandInRuntime:
    """A runtime whose every sandbox is the stand-in agent at ``base_url``."""

    name = "stand-in"

    def __init__(self, base_url: str, stand_in: StandIn) -> None:
        self.base_url = base_url
        self.stand_in = stand_in
        self.handles: dict[UUID, SandboxHandle] = {}
        self.app: Any = None  # the gateway serving it (white-box assertions)

    async def start(self, spec: SandboxSpec, progress: Any = None) -> SandboxHandle:
        self.stand_in.token = spec.token
        handle = SandboxHandle(spec=spec, base_url=self.base_url, state=SandboxState.RUNNING)
        self.handles[spec.conversation_id] = handle
        return handle

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        return self.handles.get(conversation_id)

    async def list(self) -> list[SandboxHandle]:
        return list(self.handles.values())

    async def remove(self, conversation_id: UUID) -> bool:
        return self.handles.pop(conversation_id, None) is not None

    async def cleanup_orphans(self) -> int:
        return 0

    async def close(self) -> None:
        pass

    async def templates(self) -> list[Template]:
        return await DefaultTemplateOnly(self.name, "the stand-in agent").templates()


@pytest.fixture
async def stand_in(serve: Serve) -> AsyncIterator[tuple[StandIn, str]]:
    made = StandIn()
    async with serve(made.app()) as url:
        yield made, url


#: Makes a gateway (started by ``async with``, which gives its URL) whose every sandbox is the
#: test's stand-in agent, with these settings over the base ones; and its runtime.
GatewayTo = Callable[..., tuple[Any, StandInRuntime]]


@pytest.fixture
def agent(stand_in: tuple[StandIn, str]) -> StandIn:
    return stand_in[0]


@pytest.fixture
def gateway_to(stand_in: tuple[StandIn, str], serve: Serve, tmp_path: Any) -> GatewayTo:
    agent, upstream = stand_in

    def make(**settings: Any) -> tuple[Any, StandInRuntime]:
        runtime = StandInRuntime(upstream, agent)
        runtime.app = create_app(base_settings(tmp_path, **settings), runtime)  # type: ignore[arg-type]
        return serve(runtime.app), runtime

    return make


async def test_forwarded_and_returned_headers(agent: StandIn, gateway_to: GatewayTo) -> None:
    gateway, _ = gateway_to(**keyed())
    async with gateway as url, httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=auth(ADMIN_KEY))).json()["id"]
        response = await client.get(
            f"/conversation/{cid}/agent-info",
            params={"token": "not-for-the-agent", "a": "1"},
            headers={
                **auth(ADMIN_KEY),
                "Cookie": "mine=secret",
                "X-Custom": "kept",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "dropped",
            },
        )
        assert response.status_code == 200 and response.json() == {"ok": True}
        seen = agent.seen
        assert seen["token_ok"] is True
        assert seen["query"] == "a=1"
        assert seen["headers"]["x-custom"] == "kept"
        for header in ("authorization", "cookie", "x-hop"):
            assert header not in seen["headers"], header
        assert "set-cookie" not in response.headers
        assert TOKEN_HEADER.lower() not in response.headers
        assert agent.token not in response.text and agent.token not in str(response.headers)
        info = await client.get(f"/conversation/{cid}", headers=auth(ADMIN_KEY))
        assert agent.token not in info.text


async def test_bodiless_requests_stream_through_the_lean_client(
    agent: StandIn, gateway_to: GatewayTo
) -> None:
    gateway, runtime = gateway_to(**keyed())
    async with gateway as url, httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=auth(ADMIN_KEY))).json()["id"]
        assert (await client.get(f"/conversation/{cid}/file/x")).status_code == 401  # no key, no agent
        assert agent.seen == {}
        for method in ("GET", "DELETE", "GET"):
            received = 0
            async with client.stream(
                method, f"/conversation/{cid}/file/x", headers=auth(ADMIN_KEY)
            ) as answer:
                assert answer.status_code == 200 and answer.headers["x-agent"] == "kept"
                assert "keep-alive" not in answer.headers and TOKEN_HEADER.lower() not in answer.headers
                async for chunk in answer.aiter_raw():
                    received += len(chunk)
            assert received == LISTING
            assert agent.seen == {"method": method, "token_ok": True}
        lean = context_of_app(runtime.app).proxy._lean  # white box: one connection, kept
        assert sum(len(idle) for idle in lean._idle.values()) == 1


async def test_upstream_failures_are_json_502_504(agent: StandIn, gateway_to: GatewayTo) -> None:
    gateway, runtime = gateway_to(proxy_timeout=0.5)
    async with gateway as url, httpx.AsyncClient(base_url=url) as client:
        cid = await create_ready(client)
        timed_out = await client.get(f"/conversation/{cid}/event")
        assert timed_out.status_code == 504 and "did not answer" in timed_out.json()["detail"]

        runtime.base_url = "http://127.0.0.1:9"  # nothing listens there (discard port, refused)
        other = await create_ready(client)
        refused = await client.get(f"/conversation/{other}/agent-info")
        assert refused.status_code == 502 and "could not be reached" in refused.json()["detail"]
        ws = await ws_connect(url, f"/conversation/{other}")
        assert await close_code(ws) == WS_CLOSE_UPSTREAM_UNAVAILABLE


async def test_upstream_response_is_closed_when_the_client_leaves(
    agent: StandIn, gateway_to: GatewayTo
) -> None:
    gateway, _ = gateway_to()
    async with gateway as url, httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={})).json()["id"]
        await asyncio.sleep(0)
        async with client.stream("GET", f"/conversation/{cid}/file-content/endless") as response:
            assert response.status_code == 200
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received > 4 * 1024 * 1024:
                    break
        await asyncio.wait_for(agent.stream_closed.wait(), 30)


@pytest.mark.parametrize(
    ("upstream_code", "client_code"),
    [
        (WS_CLOSE_TOO_SLOW, WS_CLOSE_TOO_SLOW),
        (1000, 1000),
        (1005, 1000),
        pytest.param(None, WS_CLOSE_UPSTREAM_UNAVAILABLE, id="dropped-without-close-frame"),
    ],
)
async def test_close_codes_pass_through_the_websocket_proxy(
    agent: StandIn, gateway_to: GatewayTo, upstream_code: int | None, client_code: int
) -> None:
    agent.ws_close = upstream_code
    gateway, _ = gateway_to()
    async with gateway as url, httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={})).json()["id"]
        await asyncio.sleep(0.1)
        ws = await ws_connect(url, f"/conversation/{cid}")
        assert (await recv_json(ws))["detail"]["type"] == "hello"
        assert await close_code(ws) == client_code


@pytest.mark.parametrize("name", ["%74oken", "t%6Fk%65n", "tok%65n"])
async def test_an_encoded_token_parameter_authenticates_and_stays_at_the_gateway(
    agent: StandIn, gateway_to: GatewayTo, name: str
) -> None:
    gateway, _ = gateway_to(**keyed())
    async with gateway as url, httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=auth(ADMIN_KEY))).json()["id"]
        response = await client.get(f"/conversation/{cid}/agent-info?a=1&{name}={ADMIN_KEY}&b=%32")
        assert response.status_code == 200, response.text
        assert agent.seen["query"] == "a=1&b=%32"  # the rest exactly as sent
        assert ADMIN_KEY not in str(agent.seen)


def _stalled_download(base_url: str, path: str) -> socket.socket:
    """A client that asks for a download and never reads a byte of it (a tiny receive window)."""
    port = int(base_url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


async def test_a_download_nobody_reads_releases_the_upstream(agent: StandIn, gateway_to: GatewayTo) -> None:
    gateway, _ = gateway_to(proxy_stall_timeout=1.0)
    async with gateway as url, httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={})).json()["id"]
        await asyncio.sleep(0.1)
        sock = _stalled_download(url, f"/conversation/{cid}/file-content/endless")
        try:
            await asyncio.wait_for(agent.stream_closed.wait(), 30)
        finally:
            sock.close()
        # The gateway serves on.
        assert (await client.get(f"/conversation/{cid}")).status_code == 200


@pytest.mark.parametrize(
    ("template", "params", "expected"),
    [
        ("/file/{path:path}", {"path": "a b/c?#%é"}, "/file/a%20b/c%3F%23%25%C3%A9"),
        ("/file/{path:path}", {"path": "../status"}, "/file/%2E%2E/status"),
        ("/file/{path:path}", {"path": "./x/."}, "/file/%2E/x/%2E"),
        ("/file/{path:path}", {"path": ""}, "/file/"),
        ("/task/{task_id}", {"task_id": ".."}, "/task/%2E%2E"),
        ("/task/{task_id}", {"task_id": "a?b"}, "/task/a%3Fb"),
        ("/agent-info", {"conversation_id": "ignored"}, "/agent-info"),
    ],
)
def test_upstream_paths_are_built_from_decoded_parameters(
    template: str, params: dict[str, str], expected: str
) -> None:
    assert UpstreamPath(template).build(params) == expected
