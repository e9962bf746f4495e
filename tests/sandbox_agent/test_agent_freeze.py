"""``POST /freeze`` and ``/thaw``: every process the agent started stops (the kernel says so),
the agent answers on, and everything goes on after the thaw; an in-process Ticker waits too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import uuid4

import httpx
from agent_helpers import TOKEN, Served
from test_agent_cli import agent_process, clean_env, wait_ready

from gateway.runtimes import procfs
from sandbox_agent.protocol import TOKEN_HEADER
from tests.helpers import eventually


def _states(agent_pid: int) -> list[str]:
    return [procfs.state(process.pid) for process in procfs.descendants(agent_pid)]


async def test_freeze_stops_every_task_process_and_thaw_continues_them(tmp_path: Path) -> None:
    env = clean_env(CONVOY_AGENT_TOKEN=TOKEN, CONVOY_CONVERSATION_ID=str(uuid4()))
    async with agent_process(tmp_path, env) as (process, url):
        await wait_ready(url, process)
        async with httpx.AsyncClient(base_url=url, headers={TOKEN_HEADER: TOKEN}, timeout=30) as client:
            # a pipeline of its own, a background job, and a daemon that left the task's tree
            command = "sleep 600 & (setsid sleep 601 &) ; sleep 602 | cat"
            created = await client.post("/task", json={"runnable": {"type": "Shell", "command": command}})
            assert created.status_code == 201, created.text

            async def started() -> bool:
                found = await asyncio.to_thread(procfs.descendants, process.pid)
                return len(found) >= 4

            await eventually(started)
            frozen = await client.post("/freeze")
            assert frozen.status_code == 200, frozen.text
            assert frozen.json()["frozen"] is True and frozen.json()["unstopped"] == 0
            states = await asyncio.to_thread(_states, process.pid)
            assert states and all(state == "T" for state in states), states
            assert procfs.state(process.pid) != "T", "the agent itself answers on"
            assert (await client.get("/task")).status_code == 200
            # freezing twice changes nothing
            assert (await client.post("/freeze")).json()["unstopped"] == 0

            thawed = await client.post("/thaw")
            assert thawed.status_code == 200 and thawed.json()["frozen"] is False
            states = await asyncio.to_thread(_states, process.pid)
            assert states and all(state != "T" for state in states), states


async def test_freeze_wants_the_token(agent: Served) -> None:
    async with httpx.AsyncClient(base_url=agent.url) as anonymous:
        assert (await anonymous.post("/freeze")).status_code == 401
        assert (await anonymous.post("/thaw")).status_code == 401


async def test_a_frozen_ticker_ticks_no_more_until_thawed(agent: Served) -> None:
    ticker = {"type": "Ticker", "interval": 0.02, "iterations": 100000}
    task = (await agent.client.post("/task", json={"runnable": ticker})).json()

    async def ticks() -> int:
        return len(await agent.events(task_id=task["id"], type="Tick"))

    await eventually(ticks)
    assert (await agent.client.post("/freeze")).status_code == 200
    await asyncio.sleep(0.1)  # a tick under way when the freeze came is let through
    before = await ticks()
    await asyncio.sleep(0.5)  # 25 intervals: a running Ticker would have ticked
    assert await ticks() == before
    assert (await agent.client.post("/thaw")).status_code == 200

    async def ticked_again() -> bool:
        return await ticks() > before

    await eventually(ticked_again)
