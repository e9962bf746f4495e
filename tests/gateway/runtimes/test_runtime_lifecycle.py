"""The lifecycle blocks of the Runtime protocol (pause/resume, snapshots, seeds), checked for
real on every runtime: PAUSED in find and list (and for another instance of the installation),
untouched by cleanup_orphans, RUNNING and answering again after resume, removable while paused;
snapshots that copy the workspace, outlive their sandbox and cleanup_orphans, seed new sandboxes
(from a snapshot, or from a live sandbox: a fork), and are gone once removed."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from dockertools import Agent
from gw_helpers import base_settings, make_spec
from process_agents import kill_agents

from gateway.agent_transport import AgentTransport
from gateway.errors import EngineNotFound, SandboxStartError
from gateway.runtimes.base import Runtime, SandboxHandle, SandboxState, SnapshotInfo, WorkspaceSeed
from gateway.runtimes.memory import MemoryRuntime
from gateway.runtimes.process import ProcessRuntime
from gateway.settings import Settings


@pytest.fixture(params=["memory", "process", pytest.param("docker", marks=pytest.mark.docker)])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    kind = str(request.param)
    made: Runtime
    if kind == "docker":
        from gateway.runtimes.docker import DockerRuntime

        settings: Settings = request.getfixturevalue("docker_settings")
        made = await DockerRuntime.connect(settings)
    else:
        settings = base_settings(tmp_path / "state", runtime=kind, process_stop_grace=2.0)
        made = MemoryRuntime(settings) if kind == "memory" else ProcessRuntime(settings)
    try:
        yield made
    finally:
        for handle in await made.list():
            await made.remove(handle.conversation_id)
        for snapshot in await made.snapshots():
            await made.remove_snapshot(snapshot.id)
        await made.close()
        kill_agents(settings.state_dir)


def _another(runtime: Runtime) -> Runtime:
    """Another gateway's instance on the same installation (memory: the same one)."""
    if isinstance(runtime, ProcessRuntime):
        return ProcessRuntime(runtime._settings)
    return runtime


async def _shell(handle: SandboxHandle, command: str) -> None:
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        agent = Agent(client, handle.base_url, handle.token)
        task = await agent.start_task({"type": "Shell", "command": command})
        assert (await agent.wait_task(task["id"]))["status"] == "COMPLETED"


async def _read(handle: SandboxHandle, path: str) -> bytes | None:
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        response = await Agent(client, handle.base_url, handle.token).get(f"/file-content/{path}")
        return response.content if response.status_code == 200 else None


async def test_pause_and_resume(runtime: Runtime) -> None:
    spec = make_spec()
    with pytest.raises(EngineNotFound):
        await runtime.pause(spec.conversation_id)
    started = await runtime.start(spec)
    paused = await runtime.pause(spec.conversation_id)
    assert paused.state is SandboxState.PAUSED and paused.spec == spec and paused.base_url == started.base_url
    assert (await runtime.pause(spec.conversation_id)).state is SandboxState.PAUSED
    for seen in (runtime, _another(runtime)):
        found = await seen.find(spec.conversation_id)
        assert found is not None and found.state is SandboxState.PAUSED and found.spec == spec
        listed = {h.conversation_id: h for h in await seen.list()}
        assert listed[spec.conversation_id].state is SandboxState.PAUSED
    if hasattr(runtime, "orphan_age"):
        runtime.orphan_age = 0.0
    await runtime.cleanup_orphans()
    assert (await runtime.find(spec.conversation_id)) == paused, "cleanup_orphans leaves a paused one"

    resumed = await runtime.resume(spec.conversation_id)
    assert resumed.state is SandboxState.RUNNING
    async with httpx.AsyncClient(timeout=30, transport=AgentTransport()) as client:
        assert (await client.get(f"{resumed.base_url}/ready")).status_code == 200

    await runtime.pause(spec.conversation_id)
    assert await runtime.remove(spec.conversation_id) is True
    assert await runtime.find(spec.conversation_id) is None


async def test_snapshots_copy_outlive_and_seed(runtime: Runtime) -> None:
    original = make_spec()
    handle = await runtime.start(original)
    await _shell(handle, "mkdir -p d && printf kept > d/f.txt")
    info = SnapshotInfo(uuid4(), "alice", "one", datetime.now(UTC), 0, original.conversation_id)
    saved = await runtime.snapshot(original.conversation_id, info)
    assert saved == dataclasses.replace(info, size=saved.size) and saved.size >= 4
    assert (await runtime.find(original.conversation_id)).state is SandboxState.RUNNING  # type: ignore[union-attr]

    fork = make_spec(seed=WorkspaceSeed(conversation_id=original.conversation_id))
    forked = await runtime.start(fork)
    assert await _read(forked, "d/f.txt") == b"kept"
    await _shell(handle, "printf changed > d/f.txt")
    assert await _read(forked, "d/f.txt") == b"kept", "the fork is a copy, not a view"

    assert await runtime.remove(original.conversation_id) is True
    await runtime.cleanup_orphans()
    assert await runtime.snapshots() == [saved], "a snapshot outlives its sandbox and cleanup_orphans"
    seeded = await runtime.start(make_spec(seed=WorkspaceSeed(snapshot_id=saved.id)))
    assert await _read(seeded, "d/f.txt") == b"kept"

    assert await runtime.remove_snapshot(saved.id) is True
    assert await runtime.remove_snapshot(saved.id) is False
    assert await runtime.snapshots() == []
    missing = make_spec(seed=WorkspaceSeed(snapshot_id=saved.id))
    with pytest.raises(SandboxStartError):
        await runtime.start(missing)
    assert await runtime.find(missing.conversation_id) is None
