"""The client over ``httpx.MockTransport`` (no server, no sockets): what it sends, how it reads
answers, how it maps errors, how it follows pages; and ``httpx.ASGITransport`` for an app
driven in-process. WebSockets need a server: they are in test_client_stub.py."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.client import (
    AsyncConvoyClient,
    BadRequest,
    ConvoyClient,
    ConvoyError,
    GatewayUnavailable,
    InvalidURL,
    LimitReached,
    NotFound,
    SandboxFailed,
    UnexpectedResponse,
)
from gateway.models import Conversation

BASE = "http://gateway.test"
Handler = Callable[[httpx.Request], httpx.Response]


def _conversation(index: int = 0, status: str = "READY", **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": uuid.UUID(int=index + 1),
        "owner": "alice",
        "title": f"c{index}",
        "status": status,
        "created_at": datetime.now(UTC),
        "idle_timeout": 60,
        "internet": False,
        "limits": {},
    }
    return Conversation.model_validate(fields | extra).model_dump(mode="json")


def client(handler: Handler, api_key: str | None = "k-alice") -> AsyncConvoyClient:
    return AsyncConvoyClient(BASE, api_key, transport=httpx.MockTransport(handler))


async def test_create_sends_the_body_and_the_key_and_answers_a_ready_handle() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=_conversation(title="demo"))

    async with client(handler) as convoy:
        handle = await convoy.create(title="demo", env={"A": "1"}, internet=True)
    assert handle.status.value == "READY" and handle.info.title == "demo"
    (request,) = seen  # READY at once: no polling
    assert (request.method, request.url.path) == ("POST", "/conversation")
    assert request.headers["authorization"] == "Bearer k-alice"
    body = json.loads(request.content)
    assert (body["title"], body["env"], body["internet"]) == ("demo", {"A": "1"}, True)


async def test_create_polls_a_starting_conversation_until_ready() -> None:
    answers = iter(["STARTING", "STARTING", "READY"])
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(f"{request.method} {request.url.path}")
        return httpx.Response(
            201 if request.method == "POST" else 200, json=_conversation(status=next(answers))
        )

    statuses: list[str] = []
    async with client(handler) as convoy:
        handle = await convoy.create(on_status=lambda info: statuses.append(info.status.value))
    assert handle.status.value == "READY"
    cid = uuid.UUID(int=1)
    assert paths == ["POST /conversation", f"GET /conversation/{cid}", f"GET /conversation/{cid}"]
    assert statuses == ["STARTING", "READY"]


async def test_create_that_fails_to_start_raises_with_the_reason_and_deletes_it() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(f"{request.method} {request.url.path}")
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(201, json=_conversation(status="ERROR", reason="image missing"))

    async with client(handler) as convoy:
        with pytest.raises(SandboxFailed, match="image missing") as failed:
            await convoy.create()
    assert failed.value.reason == "image missing"
    assert paths == ["POST /conversation", f"DELETE /conversation/{uuid.UUID(int=1)}"]


async def test_get_parses_the_conversation() -> None:
    cid = uuid.uuid4()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/conversation/{cid}"
        return httpx.Response(200, json=_conversation() | {"id": str(cid)})

    async with client(handler) as convoy:
        info = await convoy.get(str(cid))
    assert info.id == cid and info.owner == "alice"


@pytest.mark.parametrize(
    ("status", "detail", "kind", "text"),
    [
        (404, "conversation 42 not found", NotFound, "conversation 42 not found"),
        (422, [{"loc": ["body", "title"], "msg": "too long", "type": "x"}], BadRequest, "title: too long"),
        (429, "too many conversations for alice (limit 2)", LimitReached, "limit 2"),
        (502, "the sandbox is not answering", GatewayUnavailable, "not answering"),
        (404, None, NotFound, "not found"),  # no body: a sentence all the same
    ],
)
async def test_error_answers_map_to_one_hierarchy(
    status: int, detail: Any, kind: type[ConvoyError], text: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": detail} if detail is not None else None)

    async with client(handler) as convoy:
        with pytest.raises(kind) as caught:
            await convoy.get(uuid.uuid4())
    error = caught.value
    assert text in str(error)
    assert (error.status_code, error.detail) == (status, detail)
    assert error.request.startswith("GET /conversation/")


async def test_list_follows_every_page_with_the_cursor() -> None:
    conversations = [_conversation(i) for i in range(5)]
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        queries.append(query)
        start = int(query.get("page_id", "0"))
        end = min(start + int(query["limit"]), len(conversations))
        next_page = str(end) if end < len(conversations) else None
        return httpx.Response(200, json={"results": conversations[start:end], "next_page_id": next_page})

    async with client(handler) as convoy:
        titles = [info.title async for info in convoy.list(page_size=2)]
    assert titles == ["c0", "c1", "c2", "c3", "c4"]
    assert queries == [{"limit": "2"}, {"limit": "2", "page_id": "2"}, {"limit": "2", "page_id": "4"}]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>a proxy's page</html>"),  # not JSON
        httpx.Response(200, json={"id": "not a conversation"}),  # not the model
    ],
)
async def test_a_broken_answer_is_unexpected_response(answer: httpx.Response) -> None:
    async with client(lambda request: answer) as convoy:
        with pytest.raises(UnexpectedResponse):
            await convoy.get(uuid.uuid4())


async def test_a_page_that_is_not_a_page_is_unexpected_response() -> None:
    async with client(lambda request: httpx.Response(200, json=[1, 2])) as convoy:
        with pytest.raises(UnexpectedResponse, match="not a page"):
            [info async for info in convoy.list()]


async def test_a_malformed_upload_answer_is_unexpected_response(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"x")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"not": "a file info"}])

    async with client(handler) as convoy:
        handle = convoy.conversation(Conversation.model_validate(_conversation()))
        with pytest.raises(UnexpectedResponse, match="FileInfo"):
            await handle.upload(tmp_path / "a.txt")


@pytest.mark.parametrize(
    ("error", "message", "match", "call", "expected_calls"),
    [
        pytest.param(
            httpx.ConnectError,
            "connection refused",
            "cannot reach the gateway",
            lambda convoy: convoy.count(),
            ["GET", "GET"],
            id="refused-is-retried-once",
        ),
        pytest.param(
            httpx.ReadError,
            "connection reset",
            "lost the connection",
            lambda convoy: convoy.create(),
            ["POST"],
            id="a-dropped-post-is-not-sent-twice",
        ),
    ],
)
async def test_connection_errors_are_gateway_unavailable(
    error: type[httpx.TransportError],
    message: str,
    match: str,
    call: Callable[[AsyncConvoyClient], Awaitable[object]],
    expected_calls: list[str],
) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise error(message, request=request)

    async with client(handler) as convoy:
        with pytest.raises(GatewayUnavailable, match=match):
            await call(convoy)
    assert calls == expected_calls


@pytest.mark.parametrize("url", ["gateway.test", "ftp://gateway.test", "http://", ""])
async def test_a_url_that_is_not_http_is_invalid_url(url: str) -> None:
    with pytest.raises(InvalidURL):
        AsyncConvoyClient(url)


def test_the_blocking_client_takes_a_transport_too() -> None:
    conversations = [_conversation(i) for i in range(3)]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/conversation":
            return httpx.Response(200, json={"results": conversations, "next_page_id": None})
        return httpx.Response(404, json={"detail": "no such conversation"})

    with ConvoyClient(BASE, transport=httpx.MockTransport(handler)) as convoy:
        assert [info.title for info in convoy.list()] == ["c0", "c1", "c2"]
        with pytest.raises(NotFound, match="no such conversation"):
            convoy.get(uuid.uuid4())


def test_a_blocking_client_that_cannot_be_built_leaves_no_thread_behind() -> None:
    before = {thread.ident for thread in threading.enumerate()}
    with pytest.raises(InvalidURL):
        ConvoyClient("gateway.test")
    left = [t for t in threading.enumerate() if t.ident not in before and t.name == "convoy-client-loop"]
    assert left == []


async def test_an_asgi_app_can_be_driven_in_process() -> None:
    app = FastAPI()

    @app.get("/conversation-count")
    async def count() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"count": 7}

    async with AsyncConvoyClient(BASE, transport=httpx.ASGITransport(app)) as convoy:
        assert await convoy.count() == 7
        with pytest.raises(NotFound):
            await convoy.get(uuid.uuid4())
