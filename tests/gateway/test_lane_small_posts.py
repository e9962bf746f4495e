"""Small-body requests (``POST .../task?wait=true``) through the fast lane (gateway.proxy_fastlane)
of a real uvicorn gateway on loopback: the answer streamed whole with its request id, metrics
(bytes up and down) and the caller authenticated once; a refused key is the guard's 401, another
owner's conversation 404; large, chunked and ``Expect`` bodies still cross the whole stack; a
client that goes away mid-stream ends the upstream read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gw_helpers import USER_KEYS, Serve, auth, base_settings, keyed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from test_metrics import scrape, value
from test_proxy import StandIn, StandInRuntime
from test_proxy_fastlane import Recorder

from gateway.app import create_app
from gateway.auth import Authenticator
from gateway.proxy_fastlane import ProxyFastLane
from gateway.requestlog import HEADER
from gateway.server import uvicorn_options

ALICE = {**auth(USER_KEYS["alice"]), "content-type": "application/json"}
TASK = "/conversation/{conversation_id}/task"


class HoldingAgent(StandIn):
    """``POST /task``: two records; with ``?hold=1``, one record and then nothing until closed."""

    posts = 0

    def app(self) -> Starlette:
        base = super().app()

        async def task(request: Request) -> Response:
            raw = await request.body()
            self.posts += 1
            hold = request.query_params.get("hold") == "1"

            async def records() -> AsyncIterator[bytes]:
                try:
                    yield json.dumps({"size": len(raw)}).encode() + b"\n"
                    if hold:
                        await asyncio.sleep(60)
                    yield b'{"exit": 0}\n'
                finally:
                    self.stream_closed.set()

            return StreamingResponse(records(), status_code=201, media_type="application/jsonl")

        base.router.routes.insert(0, Route("/task", task, methods=["POST"]))
        return base


@pytest.fixture
async def lane(serve: Serve, tmp_path: Any) -> AsyncIterator[tuple[str, Recorder, HoldingAgent]]:
    agent = HoldingAgent()
    async with serve(agent.app()) as upstream:
        settings = base_settings(tmp_path, **keyed())
        app = create_app(settings, StandInRuntime(upstream, agent))  # type: ignore[arg-type]
        assert isinstance(app.middleware_stack, ProxyFastLane)
        recorder = Recorder(app.middleware_stack.app)
        app.middleware_stack.app = recorder
        async with serve(app, **uvicorn_options(settings)) as url:
            yield url, recorder, agent


async def test_a_small_post_is_answered_whole_in_the_lane(
    lane: tuple[str, Recorder, HoldingAgent], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder, agent = lane
    async with httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        before = await scrape(client)
        calls: list[object] = []
        real = Authenticator.authenticate

        def counted(self: Authenticator, conn: Any) -> Any:
            calls.append(conn)
            return real(self, conn)

        monkeypatch.setattr(Authenticator, "authenticate", counted)
        recorder.paths.clear()
        body = json.dumps({"command": "echo hi"}).encode()
        answer = await client.post(
            f"/conversation/{cid}/task?wait=true", content=body, headers={**ALICE, HEADER: "trace-9"}
        )
        assert len(calls) == 1  # the caller is authenticated once
        monkeypatch.undo()
        assert answer.status_code == 201 and answer.headers[HEADER] == "trace-9"
        assert [json.loads(line) for line in answer.text.splitlines()] == [{"size": len(body)}, {"exit": 0}]
        assert recorder.paths == []  # never through the whole stack
        after = await scrape(client)
    created = {"route": TASK, "method": "POST", "status": "201"}
    assert (
        value(after, "convoy_http_requests_total", **created)
        - value(before, "convoy_http_requests_total", **created)
        == 1
    )
    up = value(after, "convoy_proxied_bytes_total", direction="up")
    assert up - value(before, "convoy_proxied_bytes_total", direction="up") == len(body)
    down = value(after, "convoy_proxied_bytes_total", direction="down")
    assert down - value(before, "convoy_proxied_bytes_total", direction="down") == len(answer.content)
    assert agent.posts == 1


async def test_a_refused_key_is_the_guards_401_and_another_owner_404(
    lane: tuple[str, Recorder, HoldingAgent],
) -> None:
    url, recorder, agent = lane
    async with httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        before = await scrape(client)
        recorder.paths.clear()
        anonymous = await client.post(f"/conversation/{cid}/task", content=b"{}")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert "API key" in anonymous.json()["detail"] and HEADER in anonymous.headers
        assert "connection" not in anonymous.headers  # a small body: the connection stays usable
        wrong = await client.post(f"/conversation/{cid}/task", content=b"{}", headers=auth("nope" * 8))
        assert wrong.status_code == 401 and wrong.json() == {"detail": "the API key is not valid"}
        bob = await client.post(f"/conversation/{cid}/task", content=b"{}", headers=auth(USER_KEYS["bob"]))
        assert bob.status_code == 404 and "not found" in bob.json()["detail"]
        assert recorder.paths == [] and agent.posts == 0
        after = await scrape(client)
    # As the request guard answers before the router: counted as unmatched.
    refused = {"route": "unmatched", "method": "POST", "status": "401"}
    assert (
        value(after, "convoy_http_requests_total", **refused)
        - value(before, "convoy_http_requests_total", **refused)
        == 2
    )
    assert value(after, "convoy_http_requests_total", route=TASK, method="POST", status="404") == 1


async def test_large_chunked_and_expect_bodies_take_the_whole_stack(
    lane: tuple[str, Recorder, HoldingAgent],
) -> None:
    url, recorder, agent = lane

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"command": '
        yield b'"echo hi"}'

    async with httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        path = f"/conversation/{cid}/task?wait=true"
        recorder.paths.clear()
        large = json.dumps({"command": "x" * (64 * 1024)}).encode()
        answers = [
            await client.post(path, content=large, headers=ALICE),
            await client.post(path, content=chunks(), headers=ALICE),
            await client.post(path, content=b"{}", headers={**ALICE, "expect": "100-continue"}),
        ]
        assert [answer.status_code for answer in answers] == [201, 201, 201]
        sizes = [json.loads(answer.text.splitlines()[0])["size"] for answer in answers]
        assert sizes == [len(large), len(b'{"command": "echo hi"}'), 2]
    assert recorder.paths == [("POST", f"/conversation/{cid}/task")] * 3
    assert agent.posts == 3


async def test_a_client_gone_mid_stream_ends_the_upstream_read(
    lane: tuple[str, Recorder, HoldingAgent],
) -> None:
    url, _, agent = lane
    async with httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"command": "sleep 60"}'
    head = (
        f"POST /conversation/{cid}/task?wait=true&hold=1 HTTP/1.1\r\nhost: {host}\r\n"
        f"authorization: Bearer {USER_KEYS['alice']}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    received = b""
    while b'{"size": 23}' not in received:
        piece = await asyncio.wait_for(reader.read(65536), 10)
        assert piece, received
        received += piece
    assert received.startswith(b"HTTP/1.1 201")
    assert not agent.stream_closed.is_set()
    writer.close()  # the client goes away while the agent's answer is still open
    await asyncio.wait_for(agent.stream_closed.wait(), 10)
