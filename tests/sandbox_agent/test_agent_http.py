"""Events, status, agent-info and error bodies over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import jsonschema
import pytest
from agent_helpers import Served, make_settings, served

from sandbox_agent.agent import Agent, StateMismatch
from sandbox_agent.protocol import AgentInfo, Event, Page


async def test_first_event_is_ready_with_the_conversation_id(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    cid = uuid4()
    settings = make_settings(tmp_path, conversation_id=cid)
    async with served(serve, settings) as agent:
        events = await agent.events()
    assert len(events) == 1
    first = events[0]
    assert first["seq"] == 1
    assert first["conversation_id"] == str(cid)
    assert first["detail"] == {
        "type": "ConversationStatusUpdate",
        "status": "READY",
        "conversation_id": str(cid),
        "phase": None,
        "reason": None,
    }
    Event.model_validate(first)


async def test_restart_keeps_history_and_seq_without_a_second_ready(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, conversation_id=None)
    async with served(serve, settings) as agent:
        for n in range(3):
            assert (
                await agent.client.post("/event", json={"detail": {"type": "Note", "n": n}})
            ).status_code == 201
        cid = (await agent.events())[0]["conversation_id"]
    async with served(serve, settings) as agent:
        stored = (await agent.client.post("/event", json={"detail": {"type": "Note", "n": 3}})).json()
        events = await agent.events()
    assert stored["seq"] == 5
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["detail"]["type"] for e in events].count("ConversationStatusUpdate") == 1
    assert {e["conversation_id"] for e in events} == {cid}


async def test_state_dir_of_another_conversation_refuses_to_start(tmp_path: Path) -> None:
    first = Agent(make_settings(tmp_path, conversation_id=uuid4()))
    await first.start()
    await first.stop()
    second = Agent(make_settings(tmp_path, conversation_id=uuid4()))
    with pytest.raises(StateMismatch):
        await second.start()
    await second.events.close()


async def test_trigger_and_get_an_event(agent: Served) -> None:
    response = await agent.client.post("/event", json={"detail": {"type": "Chat", "text": "hi", "n": [1, 2]}})
    assert response.status_code == 201
    event = response.json()
    assert event["seq"] == 2
    assert event["detail"] == {"type": "Chat", "text": "hi", "n": [1, 2]}
    fetched = await agent.client.get(f"/event/{event['id']}")
    assert fetched.json() == event
    assert (await agent.client.get(f"/event/{uuid4()}")).status_code == 404
    assert (await agent.client.get("/event/not-a-uuid")).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"detail": {"type": "TaskOutput", "task_id": str(uuid4()), "stream": "stdout", "data": "x"}},
        {"detail": {"type": "ConversationStatusUpdate"}},
        {"detail": {"no_type": 1}},
        {"detail": {"type": ""}},
        {"detail": "text"},
        {"nothing": 1},
        [1, 2],
    ],
)
async def test_bad_event_triggers_are_422_and_not_stored(agent: Served, body: Any) -> None:
    response = await agent.client.post("/event", json=body)
    assert response.status_code == 422
    assert "detail" in response.json()
    assert len(await agent.events()) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b'{"detail": {"type": "\\ud800x"}}',
        b'{"detail": {"type": "A", "x": "\\udc00"}}',
        b'{"detail": {"type": "A", "\\ud800": 1}}',
        b'{"detail": {"type": "A", "x": "\xff"}}',
        b'{"detail": {"type": "\\ud800", "n": 1e999}}',
    ],
)
async def test_strings_json_allows_but_utf8_does_not_are_refused(agent: Served, raw: bytes) -> None:
    response = await agent.client.post("/event", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    assert "detail" in response.json()
    assert len(await agent.events()) == 1


async def test_malformed_json_is_422_not_500(agent: Served) -> None:
    response = await agent.client.post(
        "/event", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "detail" in response.json()


async def test_oversized_bodies_are_413(serve: Callable[..., Any], tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_event_bytes=4096)
    async with served(serve, settings) as agent:
        big = {"detail": {"type": "Big", "data": "x" * 5000}}
        response = await agent.client.post("/event", json=big)
        assert response.status_code == 413
        assert "detail" in response.json()

        async def chunked() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"x" * 1000

        response = await agent.client.post(
            "/event", content=chunked(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert len(await agent.events()) == 1


async def test_event_paging_and_filters(agent: Served) -> None:
    for n in range(120):
        await agent.client.post("/event", json={"detail": {"type": "Even" if n % 2 == 0 else "Odd", "n": n}})
    first = (await agent.client.get("/event", params={"limit": 50})).json()
    Page[Event].model_validate(first)
    assert [e["seq"] for e in first["results"]] == list(range(1, 51))
    assert first["next_page_id"] is not None
    second = (await agent.client.get("/event", params={"limit": 50, "page_id": first["next_page_id"]})).json()
    assert [e["seq"] for e in second["results"]] == list(range(51, 101))
    everything = await agent.events()
    assert [e["seq"] for e in everything] == list(range(1, 122))
    odd = await agent.events(type="Odd")
    assert [e["detail"]["n"] for e in odd] == list(range(1, 120, 2))
    both = await agent.events(type=["Odd", "ConversationStatusUpdate"], after_seq=0)
    assert len(both) == 61
    after = await agent.events(after_seq=115)
    assert [e["seq"] for e in after] == list(range(116, 122))
    assert (await agent.client.get("/event", params={"limit": 101})).status_code == 422
    assert (await agent.client.get("/event", params={"limit": 0})).status_code == 422
    assert (await agent.client.get("/event", params={"page_id": "%%%"})).status_code == 422


async def test_status_report_records_stopping(agent: Served) -> None:
    response = await agent.client.post("/status", json={"status": "STOPPING", "reason": "deleted by user"})
    assert response.status_code == 201
    detail = response.json()["detail"]
    assert detail["type"] == "ConversationStatusUpdate"
    assert detail["status"] == "STOPPING" and detail["reason"] == "deleted by user"
    assert (await agent.client.post("/status", json={"status": "STARTING"})).status_code == 422


async def test_status_report_records_paused_and_ready_and_forked(agent: Served) -> None:
    """What the gateway records around a pause and a resume, and as a fork's first event."""
    for status in ("PAUSED", "READY"):
        response = await agent.client.post("/status", json={"status": status})
        assert response.status_code == 201 and response.json()["detail"]["status"] == status
    origin = {"type": "Forked", "from_conversation_id": str(uuid4()), "from_seq": 7}
    forked = await agent.client.post("/forked", json=origin)
    assert forked.status_code == 201 and forked.json()["detail"]["from_seq"] == 7
    assert "processes" in forked.json()["detail"]["message"]
    assert (await agent.client.get("/last-seq")).json() == {"seq": forked.json()["seq"]}
    assert (await agent.client.post("/forked", json={"type": "Forked", "from_seq": 1})).status_code == 422


async def test_agent_info(agent: Served) -> None:
    info = AgentInfo.model_validate((await agent.client.get("/agent-info")).json())
    assert set(info.runnables) == {"Ticker", "Shell", "Python"}
    jsonschema.Draft202012Validator.check_schema(info.runnables["Shell"])
    jsonschema.validate({"type": "Shell", "command": "ls"}, info.runnables["Shell"])
    assert Path(info.workspace) == agent.settings.workspace.resolve()
    assert info.limits.max_upload_bytes == agent.settings.max_upload_bytes
    events = await agent.events()
    assert str(info.conversation_id) == events[0]["conversation_id"]


async def test_unknown_routes_and_methods_answer_json(agent: Served) -> None:
    missing = await agent.client.get("/nope")
    assert missing.status_code == 404 and "detail" in missing.json()
    wrong = await agent.client.put("/event")
    assert wrong.status_code == 405 and "detail" in wrong.json()


async def test_openapi_document_is_behind_the_token(agent: Served) -> None:
    document = (await agent.client.get("/openapi.json")).json()
    assert {"/event", "/task", "/upload/{parent_path}", "/file-content/{path}"} <= set(document["paths"])
    async with httpx.AsyncClient(base_url=agent.url) as bare:
        assert (await bare.get("/openapi.json")).status_code == 401
        assert (await bare.get("/docs")).status_code == 404
