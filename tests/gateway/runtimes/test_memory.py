"""MemoryRuntime on its own: agents inside the test's process, found again by a restarted
gateway handed the same instance, and removed without waiting on open connections."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import websockets
from gw_helpers import (
    TIMEOUT,
    Harness,
    base_settings,
    eventually,
    exists,
    make_spec,
    read_text,
    restarted_after_an_event,
    ws_url,
)

from gateway.runtimes import create_runtime, procfs
from gateway.runtimes.base import SandboxState
from gateway.runtimes.memory import MemoryRuntime
from sandbox_agent.protocol import TOKEN_HEADER


async def test_create_runtime_makes_a_memory_runtime(tmp_path: Path) -> None:
    runtime = await create_runtime(base_settings(tmp_path, runtime="memory"))
    assert isinstance(runtime, MemoryRuntime) and runtime.name == "memory"


async def test_the_agent_runs_in_this_process(tmp_path: Path) -> None:
    runtime = MemoryRuntime(base_settings(tmp_path))
    before = {child.pid for child in procfs.descendants(os.getpid())}
    spec = make_spec()
    handle = await runtime.start(spec)
    try:
        assert handle.state is SandboxState.RUNNING
        assert {child.pid for child in procfs.descendants(os.getpid())} <= before, "no new process"
        folder = runtime.folder(spec.conversation_id)
        assert exists(folder / "workspace") and exists(folder / "state")
    finally:
        assert await runtime.remove(spec.conversation_id) is True
    assert not exists(runtime.folder(spec.conversation_id))


async def test_a_restarted_gateway_on_the_same_instance_adopts_its_conversations(harness: Harness) -> None:
    async with restarted_after_an_event(harness, "kept") as (again, cid):
        info = (await again.get(f"/conversation/{cid}")).json()
        assert (info["status"], info["title"]) == ("READY", "kept")
        events = (await again.get(f"/conversation/{cid}/event")).json()["results"]
        assert "before" in [event["detail"]["type"] for event in events]


async def test_a_new_instance_knows_none_and_removes_what_an_old_one_left(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    old, spec = MemoryRuntime(settings), make_spec()
    await old.start(spec)
    await old.stop_agent(spec.conversation_id)
    exited = await old.find(spec.conversation_id)
    assert exited is not None and exited.state is SandboxState.EXITED and exited.exit_code == 0
    new = MemoryRuntime(settings)
    assert await new.list() == []
    assert await new.cleanup_orphans() == 1
    assert not exists(old.folder(spec.conversation_id))
    assert await old.remove(spec.conversation_id) is True, "the old instance still had its entry"
    assert await old.remove(spec.conversation_id) is False


async def test_remove_closes_open_connections_instead_of_waiting_for_them(tmp_path: Path) -> None:
    runtime, spec = MemoryRuntime(base_settings(tmp_path, process_stop_grace=30.0)), make_spec()
    handle = await runtime.start(spec)
    follower = await websockets.connect(
        ws_url(handle.base_url, "/ws"), additional_headers={TOKEN_HEADER: spec.token}
    )
    assert await asyncio.wait_for(follower.recv(), TIMEOUT)  # the READY event: following
    # A 30 s grace would be the whole budget if remove waited for the follower to leave.
    await asyncio.wait_for(runtime.remove(spec.conversation_id), 15)
    await asyncio.wait_for(follower.wait_closed(), TIMEOUT)
    assert await runtime.find(spec.conversation_id) is None


async def test_close_stops_the_agents_and_their_tasks(tmp_path: Path) -> None:
    """The task's own process (it says its pid, and it is this test's descendant: the agent runs
    in this process) is gone after close(); other processes of the session are no matter."""
    runtime, spec = MemoryRuntime(base_settings(tmp_path)), make_spec()
    handle = await runtime.start(spec)
    async with httpx.AsyncClient(base_url=handle.base_url, headers={TOKEN_HEADER: spec.token}) as client:
        command = "echo pid=$$; exec sleep 300"  # exec: the pid it says is the sleep's
        task = await client.post("/task", json={"runnable": {"type": "Shell", "command": command}})
        assert task.status_code == 201

        async def said_pid() -> int | None:
            events = (await client.get("/event", params={"type": "TaskOutput"})).json()["results"]
            text = "".join(str(event["detail"]["data"]) for event in events)
            return int(text.split("pid=")[1].split()[0]) if "pid=" in text and "\n" in text else None

        pid = await eventually(said_pid, what="the task's pid")

        async def sleeping() -> procfs.ProcessId | None:
            mine = {child.pid: child for child in procfs.descendants(os.getpid())}
            found = mine.get(pid)
            return found if found is not None and "sleep" in read_text(Path(f"/proc/{pid}/cmdline")) else None

        sleeper = await eventually(sleeping, what="the task's sleep, a descendant of this process")
    await runtime.close()
    closed = await runtime.find(spec.conversation_id)
    assert closed is not None and closed.state is SandboxState.EXITED
    assert not procfs.is_alive(sleeper), "its task ended with it"
    assert await runtime.remove(spec.conversation_id) is True
