"""The client's parsing, paging, error mapping and WebSocket resumption, against a tiny stub
server (real uvicorn, real sockets) whose misbehaviour the tests control: closing with 4008
mid-stream, replaying events already sent, skipping one. The real gateway is exercised in
test_client_gateway.py."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import JSONResponse

from gateway.client import (
    AsyncConvoyClient,
    BadRequest,
    ConversationHandle,
    ConvoyClient,
    GatewayUnavailable,
    LimitReached,
    NotFound,
    Unauthorized,
)
from gateway.models import Conversation
from sandbox_agent.protocol import WS_CLOSE_CONVERSATION_ENDED, WS_CLOSE_NOT_FOUND, WS_CLOSE_TOO_SLOW
from tests.helpers import free_port

Serve = Callable[..., AbstractAsyncContextManager[str]]
CID = uuid.uuid4()
TOTAL = 40


def _conversation(index: int) -> dict[str, Any]:
    return Conversation(
        id=uuid.UUID(int=index + 1),
        owner="local",
        title=f"c{index}",
        status="READY",
        created_at=datetime.now(UTC),
        idle_timeout=60,
        internet=False,
        limits={},
    ).model_dump(mode="json")


def _event(seq: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "seq": seq,
        "conversation_id": str(CID),
        "created_at": datetime.now(UTC).isoformat(),
        "detail": {"type": "Note", "n": seq},
    }


def stub(misbehave: str) -> tuple[FastAPI, list[int]]:
    """A stub gateway. ``misbehave``: ``slow`` closes 4008 every 7 events, ``replay`` resends
    the last 3 events on each reconnect, ``gap`` never sends seq 13 over the WebSocket.
    The list collects the ``after_seq`` of every WebSocket connection."""
    app = FastAPI()
    connects: list[int] = []
    conversations = [_conversation(i) for i in range(7)]

    @app.get("/conversation")
    async def page(page_id: str | None = None, limit: int = 50) -> dict[str, Any]:
        start = int(page_id or 0)
        end = min(start + min(limit, 3), len(conversations))  # small pages: paging must be followed
        return {
            "results": conversations[start:end],
            "next_page_id": str(end) if end < len(conversations) else None,
        }

    @app.get("/conversation-count")
    async def count() -> dict[str, int]:
        return {"count": len(conversations)}

    @app.get("/conversation/{cid}")
    async def get(cid: str) -> JSONResponse:
        answers = {
            "bad": (422, [{"loc": ["body", "title"], "msg": "too long", "type": "x"}]),
            "full": (429, "too many conversations for alice (limit 2)"),
            "down": (503, "the sandbox is not answering"),
            "key": (401, "missing or wrong API key"),
        }
        status, detail = answers.get(cid, (404, f"conversation {cid} not found"))
        return JSONResponse({"detail": detail}, status_code=status)

    @app.get(f"/conversation/{CID}/event")
    async def events(after_seq: int = 0, limit: int = 50, page_id: str | None = None) -> dict[str, Any]:
        start = int(page_id) if page_id else after_seq
        end = min(start + limit, TOTAL)
        return {"results": [_event(s) for s in range(start + 1, end + 1)], "next_page_id": None}

    @app.websocket(f"/conversation/{CID}")
    async def follow(websocket: WebSocket, after_seq: int = Query(0)) -> None:
        connects.append(after_seq)
        await websocket.accept()
        start = max(after_seq - 3, 0) if misbehave == "replay" and len(connects) > 1 else after_seq
        sent = 0
        for seq in range(start + 1, TOTAL + 1):
            if misbehave == "gap" and seq == 13:
                continue
            await websocket.send_json(_event(seq))
            sent += 1
            if misbehave in ("slow", "replay") and sent == 7 and seq < TOTAL:
                await websocket.close(WS_CLOSE_TOO_SLOW)
                return
        await websocket.close(WS_CLOSE_CONVERSATION_ENDED)

    @app.websocket("/conversation/{other}")
    async def unknown(websocket: WebSocket, other: str) -> None:
        await websocket.accept()
        await websocket.close(WS_CLOSE_NOT_FOUND, "no such conversation")

    return app, connects


async def test_lists_follow_every_page_and_count(serve: Serve) -> None:
    app, _ = stub("none")
    async with serve(app) as url, AsyncConvoyClient(url) as client:
        titles = [info.title async for info in client.list(page_size=2)]
        assert titles == [f"c{i}" for i in range(7)]
        assert await client.count() == 7


@pytest.mark.parametrize(
    ("cid", "kind", "text"),
    [
        ("00000000-0000-0000-0000-0000000000aa", NotFound, "not found"),
        ("bad", BadRequest, "title: too long"),
        ("full", LimitReached, "limit 2"),
        ("down", GatewayUnavailable, "not answering"),
        ("key", Unauthorized, "API key"),
    ],
)
async def test_http_errors_map_to_one_hierarchy(serve: Serve, cid: str, kind: type, text: str) -> None:
    app, _ = stub("none")
    async with serve(app) as url, AsyncConvoyClient(url) as client:
        with pytest.raises(kind) as caught:
            await client._conn.get_model(f"/conversation/{cid}", Conversation)
        assert text in str(caught.value)


async def test_malformed_id_is_not_found_without_a_request() -> None:
    async with AsyncConvoyClient("http://127.0.0.1:9") as client:
        with pytest.raises(NotFound):
            await client.get("not-a-uuid")


async def test_unreachable_gateway_is_gateway_unavailable() -> None:
    async with AsyncConvoyClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(GatewayUnavailable, match="cannot reach"):
            await client.count()


@pytest.mark.parametrize("misbehave", ["slow", "replay", "gap"])
async def test_follow_resumes_without_loss_or_duplicates(serve: Serve, misbehave: str) -> None:
    app, connects = stub(misbehave)
    async with serve(app) as url, AsyncConvoyClient(url) as client:
        handle = client.conversation(Conversation.model_validate(_conversation(0) | {"id": str(CID)}))
        seqs = [event.seq async for event in handle.follow(0, reconnect_for=30)]
    assert seqs == list(range(1, TOTAL + 1))
    if misbehave != "gap":
        # Each reconnect resumed from the last seq yielded.
        assert connects[0] == 0 and len(connects) > 2
        assert all(later > earlier for earlier, later in itertools.pairwise(connects))


async def test_follow_of_unknown_conversation_raises_not_found(serve: Serve) -> None:
    app, _ = stub("none")
    async with serve(app) as url, AsyncConvoyClient(url) as client:
        handle = client.conversation(Conversation.model_validate(_conversation(0)))
        with pytest.raises(NotFound, match="no such conversation"):
            async for _ in handle.follow():
                pass


async def test_sync_client_iterates_and_raises_the_same(serve: Serve) -> None:
    import asyncio

    app, _ = stub("slow")
    async with serve(app) as url:

        def work() -> tuple[list[str], list[int]]:
            with ConvoyClient(url) as client:
                titles = [info.title for info in client.list()]
                with pytest.raises(NotFound):
                    client.get(uuid.uuid4())
                info = Conversation.model_validate(_conversation(0) | {"id": str(CID)})
                convo = ConversationHandle(client._loop, client.aio.conversation(info))
                seqs = [e.seq for e in convo.follow()]
                return titles, seqs

        titles, seqs = await asyncio.to_thread(work)
    assert titles == [f"c{i}" for i in range(7)]
    assert seqs == list(range(1, TOTAL + 1))
