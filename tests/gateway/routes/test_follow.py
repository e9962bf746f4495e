"""Following one conversation over WS /conversation/{id}: resume after a disconnect
with no gap and no duplicate and cancel a running shell task (both runtimes); frames
that are not commands get an Error frame."""

from __future__ import annotations

import json
import random

import httpx
from gw_helpers import Harness, create_ready, recv_json, recv_until, task_finished, ws_connect
from websockets.asyncio.client import ClientConnection


async def test_resume_after_disconnect_has_no_gap(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        conversation_id = await create_ready(client)
        url = str(client.base_url)
        created = await client.post(
            f"/conversation/{conversation_id}/task",
            json={"runnable": {"type": "Ticker", "interval": 0.02, "iterations": 40}},
        )
        task_id = created.json()["id"]

        first = await ws_connect(url, f"/conversation/{conversation_id}")
        seen = await recv_until(
            first, lambda f: f["detail"].get("type") == "Tick" and f["detail"]["iteration"] >= 5
        )
        await first.close()
        last = seen[-1]["seq"]

        second = await ws_connect(url, f"/conversation/{conversation_id}?after_seq={last}")
        rest = await recv_until(second, task_finished(task_id))
        await second.close()

        seqs = [f["seq"] for f in seen + rest]
        assert seqs == list(range(1, len(seqs) + 1)), "gapless, no duplicate, in order"
        ticks = [f["detail"]["iteration"] for f in seen + rest if f["detail"].get("type") == "Tick"]
        assert ticks == list(range(1, 41))


async def test_live_only_follow_skips_history(harness: Harness) -> None:
    async with harness.client() as client:
        conversation_id = await create_ready(client)
        ws = await ws_connect(str(client.base_url), f"/conversation/{conversation_id}?after_seq=-1")
        await client.post(f"/conversation/{conversation_id}/event", json={"detail": {"type": "note", "n": 1}})
        frame = await recv_json(ws)
        await ws.close()
        assert frame["detail"] == {"type": "note", "n": 1}
        assert frame["seq"] > 1  # READY (seq 1) was history, not sent


async def test_cancel_running_shell_task(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        conversation_id = await create_ready(client)
        ws = await ws_connect(str(client.base_url), f"/conversation/{conversation_id}")
        sleep = f"sleep {random.randint(600_000, 699_999)}"  # a command line no other process has
        created = await client.post(
            f"/conversation/{conversation_id}/task",
            json={"runnable": {"type": "Shell", "command": f"echo started; {sleep}"}, "title": "long"},
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        await recv_until(
            ws, lambda f: f["detail"].get("type") == "TaskOutput" and "started" in f["detail"]["data"]
        )

        processes = "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"  # what runs where the agent runs
        assert sleep in await _shell_output(client, ws, conversation_id, processes)

        cancelled = await client.delete(f"/conversation/{conversation_id}/task/{task_id}")
        assert cancelled.status_code in (200, 202), cancelled.text
        frames = await recv_until(ws, task_finished(task_id))
        assert frames[-1]["detail"]["status"] == "CANCELLED"
        task = (await client.get(f"/conversation/{conversation_id}/task/{task_id}")).json()
        assert task["status"] == "CANCELLED"
        # The whole group ended: neither the shell nor its sleep is left.
        assert sleep not in await _shell_output(client, ws, conversation_id, processes)
        await ws.close()


async def _shell_output(
    client: httpx.AsyncClient, ws: ClientConnection, conversation_id: str, command: str
) -> str:
    """Runs ``command`` as a Shell task and answers its stdout (read from the follower ``ws``)."""
    created = await client.post(
        f"/conversation/{conversation_id}/task", json={"runnable": {"type": "Shell", "command": command}}
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    frames = await recv_until(ws, task_finished(task_id))
    return "".join(
        f["detail"]["data"]
        for f in frames
        if f["detail"].get("type") == "TaskOutput"
        and f["detail"].get("task_id") == task_id
        and f["detail"].get("stream") == "stdout"
    )


async def test_ws_frames_create_tasks_and_events_or_get_an_error(harness: Harness) -> None:
    async with harness.client() as client:
        conversation_id = await create_ready(client)
        ws = await ws_connect(str(client.base_url), f"/conversation/{conversation_id}?after_seq=-1")
        await ws.send(json.dumps({"detail": {"type": "hello", "text": "hi"}}))
        event = await recv_json(ws)
        assert event["detail"] == {"type": "hello", "text": "hi"} and event["seq"] >= 2
        await ws.send("not json at all")
        error = await recv_json(ws)
        assert error["detail"]["type"] == "Error" and error["seq"] == 0
        await ws.send(json.dumps({"runnable": {"type": "Nope"}}))
        error = await recv_json(ws)
        assert error["detail"]["type"] == "Error"
        await ws.close()
        events = (await client.get(f"/conversation/{conversation_id}/event", params={"type": "hello"})).json()
        assert [e["detail"]["text"] for e in events["results"]] == ["hi"]
