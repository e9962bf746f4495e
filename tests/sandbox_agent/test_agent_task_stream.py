"""``POST /task?wait=true``: the task, its events, then its final state, in one streamed answer."""

from __future__ import annotations

import json
from typing import Any

from agent_helpers import Served

from sandbox_agent.protocol import TASK_STREAM_MEDIA_TYPE
from tests.helpers import eventually


async def _stream(agent: Served, runnable: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    body = {"runnable": runnable, "title": "streamed"}
    async with agent.client.stream("POST", "/task", params={"wait": "true"}, json=body) as response:
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    return response, lines


async def test_the_answer_is_the_task_its_events_then_its_final_state(agent: Served) -> None:
    response, lines = await _stream(agent, {"type": "Shell", "command": "echo out; echo err >&2; exit 3"})
    assert response.status_code == 201
    assert response.headers["content-type"] == TASK_STREAM_MEDIA_TYPE
    first, *events, last = lines
    assert first["type"] == "task" and first["task"]["status"] == "PENDING"
    task_id = first["task"]["id"]
    assert last["type"] == "task" and last["task"]["id"] == task_id
    assert last["task"]["status"] == "ERROR" and last["task"]["exit_code"] == 3
    assert {line["type"] for line in events} == {"event"}
    details = [line["event"]["detail"] for line in events]
    assert {detail["task_id"] for detail in details} == {task_id}
    output = {
        s: "".join(d["data"] for d in details if d["type"] == "TaskOutput" and d["stream"] == s)
        for s in ("stdout", "stderr")
    }
    assert output == {"stdout": "out\n", "stderr": "err\n"}
    statuses = [d["status"] for d in details if d["type"] == "TaskStatusUpdate"]
    assert statuses == ["PENDING", "RUNNING", "ERROR"]
    seqs = [line["event"]["seq"] for line in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # The log recorded exactly what was streamed.
    stored = await agent.events(task_id=task_id)
    assert [e["seq"] for e in stored] == seqs


async def test_other_events_and_client_events_naming_the_task_are_not_in_its_stream(agent: Served) -> None:
    body = {"runnable": {"type": "Shell", "command": "sleep 0.3; echo done"}}
    async with agent.client.stream("POST", "/task", params={"wait": "true"}, json=body) as response:
        lines = response.aiter_lines()
        first = json.loads(await anext(lines))
        task_id = first["task"]["id"]
        trigger = {"detail": {"type": "Note", "task_id": task_id}}
        assert (await agent.client.post("/event", json=trigger)).status_code == 201
        await agent.run({"type": "Ticker", "interval": 0, "iterations": 2})
        rest = [json.loads(line) async for line in lines if line]
    assert rest[-1]["task"]["status"] == "COMPLETED"
    kinds = {line["event"]["detail"]["type"] for line in rest[:-1]}
    assert kinds == {"TaskStatusUpdate", "TaskOutput"}
    assert {line["event"]["detail"]["task_id"] for line in rest[:-1]} == {task_id}


async def test_a_refused_task_answers_json_before_anything_runs(agent: Served) -> None:
    body = {"runnable": {"type": "Shell", "command": "true", "cwd": "missing"}}
    response = await agent.client.post("/task", params={"wait": "true"}, json=body)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()
    assert (await agent.client.get("/task")).json()["results"] == []


async def test_a_client_that_goes_away_does_not_end_the_task(agent: Served) -> None:
    marker = agent.settings.workspace / "finished"
    command = f"sleep 0.5; echo yes > {marker}"
    body = {"runnable": {"type": "Shell", "command": command}}
    async with agent.client.stream("POST", "/task", params={"wait": "true"}, json=body) as response:
        task_id = json.loads(await anext(response.aiter_lines()))["task"]["id"]
    # The stream is closed: the task still runs to its end.
    task = await agent.task_done(task_id)
    assert task["status"] == "COMPLETED" and task["exit_code"] == 0
    assert marker.read_text() == "yes\n"


async def test_a_cancelled_task_ends_its_stream_with_cancelled(agent: Served) -> None:
    body = {"runnable": {"type": "Shell", "command": "echo started; sleep 60"}}
    async with agent.client.stream("POST", "/task", params={"wait": "true"}, json=body) as response:
        lines = response.aiter_lines()
        task_id = json.loads(await anext(lines))["task"]["id"]

        async def started() -> bool:
            return bool(await agent.output(task_id))

        await eventually(started)
        assert (await agent.client.delete(f"/task/{task_id}")).status_code == 200
        rest = [json.loads(line) async for line in lines if line]
    assert rest[-1]["type"] == "task" and rest[-1]["task"]["status"] == "CANCELLED"


async def test_without_wait_the_answer_is_the_task_as_json(agent: Served) -> None:
    response = await agent.client.post("/task", json={"runnable": {"type": "Shell", "command": "true"}})
    assert response.status_code == 201 and response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "PENDING"
