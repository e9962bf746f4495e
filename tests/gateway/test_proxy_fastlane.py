"""The one-layer lane for bodiless and small-body proxied requests (gateway.proxy_fastlane): it
takes only those, and answers them as the whole stack does (request id, metrics, access log, JSON errors);
everything else still crosses the whole stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gw_helpers import ADMIN_KEY, USER_KEYS, Serve, auth, base_settings, keyed
from starlette.types import ASGIApp, Receive, Scope, Send
from test_metrics import scrape, value
from test_proxy import StandIn, StandInRuntime
from test_requestlog import access_lines, json_lines

from gateway import proxy_dispatch
from gateway.app import create_app
from gateway.proxy_fastlane import ProxyFastLane
from gateway.requestlog import HEADER
from gateway.server import uvicorn_options

ALICE = auth(USER_KEYS["alice"])
INFO = "/conversation/{conversation_id}/agent-info"


class Recorder:
    """Wraps the whole stack behind the lane: which requests reached it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
async def lane(
    serve: Serve, tmp_path: Any, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, Recorder]]:
    overrides = getattr(request, "param", {})
    stand_in = StandIn()
    async with serve(stand_in.app()) as upstream:
        runtime = StandInRuntime(upstream, stand_in)
        settings = base_settings(tmp_path, **keyed(**overrides))
        app = create_app(settings, runtime)  # type: ignore[arg-type]
        assert isinstance(app.middleware_stack, ProxyFastLane)
        recorder = Recorder(app.middleware_stack.app)
        app.middleware_stack.app = recorder
        async with serve(app, **uvicorn_options(settings)) as url:
            yield url, recorder


async def test_only_bodiless_or_small_proxied_requests_take_the_lane(lane: tuple[str, Recorder]) -> None:
    url, recorder = lane
    async with httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        taken = [
            await client.get(f"/conversation/{cid}/agent-info", headers=ALICE),
            await client.get(f"/conversation/{cid}/file/a.txt", headers=ALICE),
            await client.delete(f"/conversation/{cid}/file/a.txt", headers=ALICE),
            await client.get(f"/conversation/{uuid.uuid4()}/agent-info", headers=ALICE),  # 404, still taken
        ]
        assert [answer.status_code for answer in taken] == [200, 200, 200, 404]
        recorder.paths.clear()
        small = await client.request("GET", f"/conversation/{cid}/agent-info", content=b"x", headers=ALICE)
        assert small.status_code == 200  # a small body: taken
        large = b"x" * (64 * 1024 + 1)
        with_body = await client.request(
            "GET", f"/conversation/{cid}/agent-info", content=large, headers=ALICE
        )
        assert with_body.status_code == 200
        await client.get(f"/conversation/{cid}/port/8000/", headers=ALICE)  # the preview layer's
        own = await client.get(f"/conversation/{cid}", headers=ALICE)
        assert own.status_code == 200
        unknown = await client.get(f"/conversation/{cid}/nothing-here", headers=ALICE)
        assert unknown.status_code == 404
    assert recorder.paths == [
        ("GET", f"/conversation/{cid}/agent-info"),
        ("GET", f"/conversation/{cid}/port/8000/"),
        ("GET", f"/conversation/{cid}"),
        ("GET", f"/conversation/{cid}/nothing-here"),
    ]


async def test_the_lane_answers_with_ids_metrics_and_json_errors(lane: tuple[str, Recorder]) -> None:
    url, recorder = lane
    async with httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        before = await scrape(client)
        recorder.paths.clear()
        echoed = await client.get(f"/conversation/{cid}/agent-info", headers={**ALICE, HEADER: "trace-7"})
        assert echoed.json() == {"ok": True} and echoed.headers[HEADER] == "trace-7"
        assert len((await client.get(f"/conversation/{cid}/agent-info", headers=ALICE)).headers[HEADER]) == 32
        anonymous = await client.get(f"/conversation/{cid}/agent-info")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert "API key" in anonymous.json()["detail"] and HEADER in anonymous.headers
        bob = await client.get(f"/conversation/{cid}/agent-info", headers=auth(USER_KEYS["bob"]))
        assert bob.status_code == 404 and "not found" in bob.json()["detail"]
        assert recorder.paths == []  # all of them in the lane
        after = await scrape(client)
    ok, refused = ({"route": INFO, "method": "GET", "status": s} for s in ("200", "401"))
    assert (
        value(after, "convoy_http_requests_total", **ok) - value(before, "convoy_http_requests_total", **ok)
        == 2
    )
    assert value(after, "convoy_http_requests_total", **refused) == 1
    assert value(after, "convoy_http_request_seconds_count", **refused) == 1
    down = value(after, "convoy_proxied_bytes_total", direction="down")
    assert down - value(before, "convoy_proxied_bytes_total", direction="down") >= 2 * len(echoed.content)


@pytest.mark.parametrize("lane", [{"log_format": "json"}], indirect=True)
async def test_the_lane_writes_the_access_line(lane: tuple[str, Recorder]) -> None:
    url, _ = lane
    with json_lines() as lines:
        async with httpx.AsyncClient(base_url=url) as client:
            cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
            answer = await client.get(f"/conversation/{cid}/agent-info?token=x", headers=auth(ADMIN_KEY))
    mine = [line for line in access_lines(lines) if line["request_id"] == answer.headers[HEADER]]
    assert len(mine) == 1
    assert mine[0]["route"] == INFO and mine[0]["status"] == 200 and mine[0]["principal"] == "admin"
    assert ADMIN_KEY not in "\n".join(lines)


async def test_an_unexpected_error_is_a_json_500(
    lane: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = lane

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    async with httpx.AsyncClient(base_url=url) as client:
        cid = (await client.post("/conversation", json={}, headers=ALICE)).json()["id"]
        monkeypatch.setattr(proxy_dispatch, "forward_request", broken)  # what the lane forwards with
        answer = await client.get(f"/conversation/{cid}/agent-info", headers=ALICE)
        assert answer.status_code == 500 and answer.json() == {"detail": "internal error in the gateway"}
        monkeypatch.undo()
        samples = await scrape(client)
    assert value(samples, "convoy_http_requests_total", route=INFO, method="GET", status="500") == 1
    assert any("unexpected error on GET" in record.getMessage() for record in caplog.records)
