"""stdin of a running task: HTTP body and WebSocket frame reach a ``read``, eof closes it, and 409s."""

from __future__ import annotations

import json
import uuid

import websockets
from agent_helpers import Served, ws_headers

from tests.helpers import eventually


async def start(agent: Served, runnable: dict[str, object]) -> str:
    response = await agent.client.post("/task", json={"runnable": runnable})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_http_body_reaches_a_read_and_eof_closes(agent: Served) -> None:
    script = "read a; echo got-$a; cat; echo done"
    task = await start(agent, {"type": "Shell", "command": script, "stdin": True})
    written = await agent.client.post(f"/task/{task}/stdin", content=b"first\n")
    assert written.status_code == 200, written.text
    assert written.json() == {"task_id": task, "written": 6, "closed": False}
    await eventually(lambda: _has_output(agent, task, "got-first"))
    closed = await agent.client.post(f"/task/{task}/stdin", params={"eof": "true"}, content=b"rest\n")
    assert closed.json()["closed"] is True
    final = await agent.task_done(task)
    assert final["status"] == "COMPLETED", final
    assert await agent.output(task) == "got-first\nrest\ndone\n"
    again = await agent.client.post(f"/task/{task}/stdin", content=b"late")
    assert again.status_code == 409 and "COMPLETED" in again.json()["detail"]


async def _has_output(agent: Served, task: str, text: str) -> bool:
    return text in await agent.output(task)


async def test_websocket_frame_reaches_a_python_read(agent: Served) -> None:
    code = "import sys\nline = sys.stdin.readline()\nprint('py', line.strip(), sys.stdin.read() == '')\n"
    task = await start(agent, {"type": "Python", "code": code, "stdin": True})
    async with websockets.connect(agent.ws_url + "?after_seq=-1", additional_headers=ws_headers()) as ws:
        await ws.send(json.dumps({"task_id": task, "stdin": "hello\n"}))
        await ws.send(json.dumps({"task_id": task, "eof": True}))
        await ws.send(json.dumps({"task_id": task, "stdin": "too late"}))
        errors = []
        while True:
            frame = json.loads(await ws.recv())
            if frame["detail"]["type"] == "Error":
                errors.append(frame["detail"]["message"])
            if frame["detail"].get("status") in ("COMPLETED", "ERROR"):
                break
    assert frame["detail"]["status"] == "COMPLETED", frame
    assert await agent.output(task) == "py hello True\n"
    assert errors and "closed" in errors[0]


async def test_a_task_without_open_stdin_is_409_and_unknown_is_404(agent: Served) -> None:
    task = await start(agent, {"type": "Shell", "command": "sleep 30"})
    refused = await agent.client.post(f"/task/{task}/stdin", content=b"x")
    assert refused.status_code == 409 and '"stdin": true' in refused.json()["detail"]
    await agent.client.delete(f"/task/{task}")
    unknown = await agent.client.post(f"/task/{uuid.uuid4()}/stdin", content=b"x")
    assert unknown.status_code == 404


async def test_without_stdin_a_task_reads_eof(agent: Served) -> None:
    task = await start(agent, {"type": "Shell", "command": "cat; echo end"})
    assert (await agent.task_done(task))["status"] == "COMPLETED"
    assert await agent.output(task) == "end\n"


async def test_large_python_code_runs_with_stdin_open(agent: Served) -> None:
    code = "x = 1\n" * 50_000 + "print(input())\n"  # larger than a pipe buffer
    task = await start(agent, {"type": "Python", "code": code, "stdin": True})
    await agent.client.post(f"/task/{task}/stdin", params={"eof": "true"}, content=b"big\n")
    assert (await agent.task_done(task))["status"] == "COMPLETED"
    assert await agent.output(task) == "big\n"
