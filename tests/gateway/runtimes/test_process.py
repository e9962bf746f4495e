"""ProcessRuntime on its own: real agent processes under a temporary state dir."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from gw_helpers import base_settings, exists, make_spec, read_text
from process_agents import agent_processes

from gateway.runtimes import procfs
from gateway.runtimes.base import SandboxSpec, SandboxStartError, SandboxState
from gateway.runtimes.process import ProcessRuntime
from sandbox_agent.protocol import TOKEN_HEADER
from tests.helpers import eventually


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    made = ProcessRuntime(base_settings(tmp_path / "state", process_stop_grace=2.0))
    yield made
    for handle in await made.list():
        await made.remove(handle.conversation_id)


def _agent(runtime: ProcessRuntime, spec: SandboxSpec) -> procfs.ProcessId:
    meta = json.loads(read_text(runtime._dir(spec.conversation_id) / "meta.json"))
    return procfs.ProcessId(meta["pid"], meta["started"])


async def test_start_find_list_remove(runtime: ProcessRuntime) -> None:
    phases: list[str] = []

    async def progress(phase: str) -> None:
        phases.append(phase)

    spec = make_spec(env={"GREETING": "hello", "CONVOY_AGENT_TOKEN": "stolen"})
    handle = await runtime.start(spec, progress)
    assert phases == ["preparing the workspace", "starting the agent", "waiting for the agent"]
    assert handle.state is SandboxState.RUNNING and handle.base_url.startswith("http://127.0.0.1:")
    folder = runtime._dir(spec.conversation_id)
    assert oct(os.stat(folder / "meta.json").st_mode & 0o777) == "0o600"

    async with httpx.AsyncClient(base_url=handle.base_url, headers={TOKEN_HEADER: spec.token}) as client:
        info = await client.get("/agent-info")
        assert info.status_code == 200, "the spec's env cannot replace the agent's own token"
        assert info.json()["conversation_id"] == str(spec.conversation_id)
        task = await client.post(
            "/task", json={"runnable": {"type": "Shell", "command": "echo $GREETING-$CONVOY_API_KEYS"}}
        )
        assert task.status_code == 201

        async def output() -> str:
            events = (await client.get("/event", params={"type": "TaskOutput"})).json()["results"]
            return "".join(e["detail"]["data"] for e in events)

        assert (await eventually(output)).strip() == "hello-", "spec env passed; gateway keys not"

    found = await runtime.find(spec.conversation_id)
    assert found is not None and found.spec == spec and found.base_url == handle.base_url
    assert [h.conversation_id for h in await runtime.list()] == [spec.conversation_id]
    # A second runtime on the same state dir (a restarted gateway) sees the same.
    again = ProcessRuntime(runtime._settings)
    assert [h.spec for h in await again.list()] == [spec]

    agent = _agent(runtime, spec)
    assert await runtime.remove(spec.conversation_id) is True
    assert not procfs.is_alive(agent)
    assert not exists(folder)
    assert await runtime.find(spec.conversation_id) is None
    assert await runtime.remove(spec.conversation_id) is False


async def test_a_failed_start_says_why_and_leaves_nothing(runtime: ProcessRuntime) -> None:
    spec = make_spec(env={"PYTHONHOME": "/nonexistent"})
    with pytest.raises(SandboxStartError) as raised:
        await runtime.start(spec)
    assert "agent's last output" in str(raised.value)
    assert "Python" in str(raised.value) or "encodings" in str(raised.value)
    assert not exists(runtime._dir(spec.conversation_id))
    assert await runtime.list() == []


async def test_exited_agents_are_reported_and_cleaned_up(runtime: ProcessRuntime) -> None:
    spec = make_spec()
    await runtime.start(spec)
    agent = _agent(runtime, spec)
    os.kill(agent.pid, signal.SIGKILL)

    async def exited() -> bool:
        handle = await runtime.find(spec.conversation_id)
        return handle is not None and handle.state is SandboxState.EXITED

    await eventually(exited)
    handle = await runtime.find(spec.conversation_id)
    assert handle is not None and handle.exit_code is None, "not our child: its exit code is unknown"
    assert handle.reason and f"agent process {agent.pid} ended" in handle.reason
    stray = runtime._root / str(uuid4())
    stray.mkdir()  # a start that died before writing its metadata, long ago
    os.utime(stray, (0, 0))
    # Another gateway's start on the same state dir, before it wrote the metadata: left alone.
    under_way = runtime._root / str(uuid4())
    under_way.mkdir()
    assert await runtime.cleanup_orphans() == 2
    assert await runtime.list() == []
    assert not exists(stray)
    assert exists(under_way)


async def test_a_start_under_way_is_starting_for_every_gateway(runtime: ProcessRuntime) -> None:
    spec = make_spec()
    seen: list[object] = []

    async def progress(phase: str) -> None:
        if phase == "waiting for the agent":
            mine = await runtime.find(spec.conversation_id)
            theirs = await ProcessRuntime(runtime._settings).find(spec.conversation_id)  # another gateway
            seen.extend([mine and mine.state, theirs and theirs.state])

    handle = await runtime.start(spec, progress)
    assert seen == [SandboxState.STARTING, SandboxState.STARTING]
    assert handle.state is SandboxState.RUNNING
    found = await ProcessRuntime(runtime._settings).find(spec.conversation_id)
    assert found is not None and found.state is SandboxState.RUNNING


async def test_the_token_is_in_no_environment_of_the_agent_or_its_tasks(runtime: ProcessRuntime) -> None:
    spec = make_spec()
    await runtime.start(spec)
    agent = _agent(runtime, spec)
    agent_env = await asyncio.to_thread(Path(f"/proc/{agent.pid}/environ").read_bytes)
    assert b"CONVOY_AGENT_TOKEN_FILE=" in agent_env
    assert spec.token.encode() not in agent_env
    handle = await runtime.find(spec.conversation_id)
    assert handle is not None
    async with httpx.AsyncClient(base_url=handle.base_url, headers={TOKEN_HEADER: spec.token}) as client:
        command = "cat /proc/$PPID/environ /proc/self/environ | tr '\\0' '\\n'"
        task = await client.post("/task", json={"runnable": {"type": "Shell", "command": command}})
        assert task.status_code == 201

        async def output() -> str:
            events = (await client.get("/event", params={"type": "TaskOutput"})).json()["results"]
            text = "".join(e["detail"]["data"] for e in events)
            return text if "CONVOY_CONVERSATION_ID" in text else ""

        seen = await eventually(output)
    assert spec.token not in seen and "CONVOY_AGENT_TOKEN=" not in seen, seen


async def _until_an_agent_runs(root: Path) -> None:
    async def launched() -> bool:
        return bool(await asyncio.to_thread(agent_processes, root))

    await eventually(launched, what="the agent's process")


async def test_a_start_cancelled_as_its_agent_is_launched_leaves_no_agent(runtime: ProcessRuntime) -> None:
    """Cancelled the moment its agent's process appears (the launcher still reporting it, or
    its metadata not written yet): no agent lives on."""
    root = runtime._root
    for _ in range(3):
        start = asyncio.create_task(runtime.start(make_spec()))
        await _until_an_agent_runs(root)
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        assert await asyncio.to_thread(agent_processes, root) == {}


async def test_stop_returns_once_the_agent_and_its_tasks_are_gone(tmp_path: Path) -> None:
    """An agent deaf to SIGTERM (its grace runs out) and a task in a group of its own: both are
    gone when remove() returns, not merely signalled."""
    runtime = ProcessRuntime(base_settings(tmp_path / "state", process_stop_grace=0.2))
    spec = make_spec()
    handle = await runtime.start(spec)
    async with httpx.AsyncClient(base_url=handle.base_url, headers={TOKEN_HEADER: spec.token}) as client:
        task = await client.post("/task", json={"runnable": {"type": "Shell", "command": "sleep 600"}})
        assert task.status_code == 201
        agent = _agent(runtime, spec)

        async def has_a_task() -> bool:
            return bool(await asyncio.to_thread(procfs.descendants, agent.pid))

        await eventually(has_a_task, what="the task's process")
    family = await asyncio.to_thread(procfs.descendants, agent.pid)
    os.kill(agent.pid, signal.SIGSTOP)  # stopped: SIGTERM waits; SIGKILL ends it all the same
    assert await runtime.remove(spec.conversation_id)
    assert not procfs.is_alive(agent)
    assert [p.pid for p in family if procfs.is_alive(p)] == []


async def test_an_agent_its_metadata_never_named_is_found_and_removed(runtime: ProcessRuntime) -> None:
    """A gateway killed during a launch leaves an agent whose pid never reached ``meta.json``:
    the clean-up of that half-made folder still stops the agent, found by its command line."""
    spec = make_spec()
    await runtime.start(spec)
    agent = _agent(runtime, spec)
    meta = runtime._dir(spec.conversation_id) / "meta.json"
    written = json.loads(read_text(meta))
    meta.write_text(
        json.dumps({key: value for key, value in written.items() if key not in ("pid", "started")})
    )
    assert await runtime.remove(spec.conversation_id)
    assert not procfs.is_alive(agent)
    assert await asyncio.to_thread(agent_processes, runtime._root) == {}
