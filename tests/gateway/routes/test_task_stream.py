"""``POST /conversation/{id}/task?wait=true`` through the gateway: streamed as it happens, with no
read timeout on a silent command, and a client leaving early does not end the task."""

from __future__ import annotations

import json
from typing import Any

from gw_helpers import Harness, create_ready

from sandbox_agent.protocol import TASK_STREAM_MEDIA_TYPE
from tests.helpers import eventually


def _shell(command: str) -> dict[str, Any]:
    return {"runnable": {"type": "Shell", "command": command}}


async def test_a_silent_command_streams_to_its_end_past_the_proxy_timeout(harness: Harness) -> None:
    async with harness.client(proxy_timeout=0.5) as client:
        cid = await create_ready(client)
        path = f"/conversation/{cid}/task"
        async with client.stream(
            "POST", path, params={"wait": "true"}, json=_shell("sleep 1.5; echo late")
        ) as answer:
            assert answer.status_code == 201
            assert answer.headers["content-type"] == TASK_STREAM_MEDIA_TYPE
            lines = [json.loads(line) async for line in answer.aiter_lines() if line]
        last = lines[-1]
        assert (
            last["type"] == "task"
            and last["task"]["status"] == "COMPLETED"
            and last["task"]["exit_code"] == 0
        )
        output = "".join(
            line["event"]["detail"]["data"]
            for line in lines
            if line["type"] == "event" and line["event"]["detail"]["type"] == "TaskOutput"
        )
        assert output == "late\n"
        # The event log has it all, as without wait.
        stored = (
            await client.get(f"/conversation/{cid}/event", params={"task_id": last["task"]["id"]})
        ).json()
        assert [e["seq"] for e in stored["results"]] == [line["event"]["seq"] for line in lines[1:-1]]


async def test_leaving_the_stream_early_does_not_end_the_task(harness: Harness) -> None:
    async with harness.client() as client:
        cid = await create_ready(client)
        path = f"/conversation/{cid}/task"
        async with client.stream(
            "POST", path, params={"wait": "true"}, json=_shell("sleep 0.5; echo done")
        ) as answer:
            task_id = json.loads(await anext(answer.aiter_lines()))["task"]["id"]

        async def finished() -> dict[str, Any] | None:
            task: dict[str, Any] = (await client.get(f"{path}/{task_id}")).json()
            return task if task["status"] not in ("PENDING", "RUNNING") else None

        task = await eventually(finished)
        assert task["status"] == "COMPLETED" and task["exit_code"] == 0


async def test_a_refused_task_is_a_json_error_through_the_gateway(harness: Harness) -> None:
    async with harness.client() as client:
        cid = await create_ready(client)
        body = {"runnable": {"type": "Nope"}}
        answer = await client.post(f"/conversation/{cid}/task", params={"wait": "true"}, json=body)
        assert answer.status_code == 422 and "detail" in answer.json()
