"""The swarm runtime on the session's three-node cluster: what only a cluster shows.

Conversations spread over the nodes and leave nothing on any of them; a node
without the image fails a start naming the node and the image; the token is a
root-only config and in no environment; a pause freezes through the agent and restarts no task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gw_helpers import eventually, make_spec

from gateway.errors import SandboxStartError
from gateway.runtimes import swarm_config as scfg
from gateway.runtimes.base import SandboxState
from gateway.runtimes.swarm import SwarmRuntime
from sandbox_agent.protocol import TOKEN_HEADER
from tests.gateway.swarm_cluster import Cluster, docker, leftovers, node_of, sandbox_processes, swarm_settings

pytestmark = pytest.mark.swarm


@pytest.fixture
async def runtime(swarm_cluster: Cluster, tmp_path: Path) -> AsyncIterator[SwarmRuntime]:
    made = await SwarmRuntime.connect(swarm_settings(swarm_cluster, tmp_path / "state"))
    try:
        yield made
    finally:
        for handle in await made.list():
            await made.remove(handle.conversation_id)
        await made.close()


async def _nothing_left(cluster: Cluster) -> None:
    async def clean() -> bool:
        return await asyncio.to_thread(leftovers, cluster) == {}

    await eventually(clean, what="nothing left on any node")


async def test_conversations_spread_over_the_nodes_and_leave_nothing(
    swarm_cluster: Cluster, runtime: SwarmRuntime
) -> None:
    specs = [make_spec() for _ in range(4)]
    handles = await asyncio.gather(*(runtime.start(spec) for spec in specs))
    placed = [asyncio.to_thread(node_of, swarm_cluster, runtime.install, s.conversation_id) for s in specs]
    nodes = {node.name for node in await asyncio.gather(*placed)}
    assert len(nodes) >= 2, f"the scheduler spread 4 sandboxes over {nodes}"
    async with httpx.AsyncClient(timeout=30) as client:
        for spec, handle in zip(specs, handles, strict=True):
            info = await client.get(f"{handle.base_url}/agent-info", headers={TOKEN_HEADER: spec.token})
            assert info.status_code == 200 and info.json()["conversation_id"] == str(spec.conversation_id)
            # A token of another conversation opens nothing here.
            other = specs[(specs.index(spec) + 1) % len(specs)].token
            refused = await client.get(f"{handle.base_url}/agent-info", headers={TOKEN_HEADER: other})
            assert refused.status_code == 401
    assert sorted(await asyncio.gather(*(runtime.remove(s.conversation_id) for s in specs))) == [True] * 4
    await _nothing_left(swarm_cluster)


async def test_the_token_is_a_root_only_config_and_in_no_environment(
    swarm_cluster: Cluster, runtime: SwarmRuntime
) -> None:
    spec = make_spec()
    await runtime.start(spec)
    names = scfg.Names.of(runtime.install, spec.conversation_id)
    service = json.loads(docker(swarm_cluster.manager, "service", "inspect", names.sandbox))[0]
    container = service["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert not any(spec.token in item for item in container.get("Env") or [])
    [mounted] = container["Configs"]
    assert mounted["File"] == {"Name": scfg.TOKEN_PATH, "UID": "0", "GID": "0", "Mode": 0o400}
    assert await runtime.engine.config_data(names.token_config) == spec.token.encode()
    node = await asyncio.to_thread(node_of, swarm_cluster, runtime.install, spec.conversation_id)
    mine = f"label=convoy.conversation-id={spec.conversation_id}"
    [task_container] = docker(
        node, "ps", "-q", "--filter", mine, "--filter", "label=convoy.role=sandbox"
    ).split()
    as_tasks_run = docker(
        node, "exec", "-u", "10001:10001", task_container, "sh", "-c", f"cat {scfg.TOKEN_PATH} 2>&1 || true"
    )
    assert spec.token not in as_tasks_run and "Permission denied" in as_tasks_run


async def test_a_node_without_the_image_fails_the_start_naming_node_and_image(
    swarm_cluster: Cluster, tmp_path: Path
) -> None:
    only_here = "convoy-sandbox:cvs-manager-only"
    docker(swarm_cluster.manager, "tag", swarm_cluster.images[0], only_here)
    settings = swarm_settings(
        swarm_cluster, tmp_path / "state", docker_image=only_here, swarm_constraints=["node.role==worker"]
    )
    made = await SwarmRuntime.connect(settings)
    try:
        spec = make_spec()
        with pytest.raises(SandboxStartError) as failed:
            await made.start(spec)
        assert "no image" in str(failed.value) and only_here in str(failed.value)
        assert "node " in str(failed.value) and swarm_cluster.subnet in str(failed.value), str(failed.value)
        assert await made.find(spec.conversation_id) is None
    finally:
        await made.close()
        docker(swarm_cluster.manager, "rmi", only_here)


async def test_pause_freezes_through_the_agent_without_restarting_the_task(
    swarm_cluster: Cluster, tmp_path: Path
) -> None:
    settings = swarm_settings(swarm_cluster, tmp_path / "state")
    made = await SwarmRuntime.connect(settings)
    spec = make_spec()
    names = scfg.Names.of(settings.install, spec.conversation_id)
    try:
        handle = await made.start(spec)
        headers = {TOKEN_HEADER: spec.token}
        async with httpx.AsyncClient(base_url=handle.base_url, headers=headers, timeout=30) as agent:
            sleeper = {"runnable": {"type": "Shell", "command": "sleep 600"}}
            assert (await agent.post("/task", json=sleeper)).status_code == 201
            tasks_before = docker(swarm_cluster.manager, "service", "ps", "-q", names.sandbox).split()

            async def sleeping() -> bool:
                found = await asyncio.to_thread(
                    sandbox_processes, swarm_cluster, settings.install, spec.conversation_id
                )
                return any(name == "sleep" for name, _ in found)

            await eventually(sleeping)
            paused = await made.pause(spec.conversation_id)
            assert paused.state is SandboxState.PAUSED
            found = await asyncio.to_thread(
                sandbox_processes, swarm_cluster, settings.install, spec.conversation_id
            )
            assert found and all(state == "T" for _, state in found), found
            assert (await agent.get("/task")).status_code == 200, "the agent answers while paused"
            # Another gateway (a restart) reads it PAUSED; the task was never restarted.
            other = await SwarmRuntime.connect(settings)
            try:
                seen = await other.find(spec.conversation_id)
                assert seen is not None and seen.state is SandboxState.PAUSED
                assert (await other.pause(spec.conversation_id)).state is SandboxState.PAUSED
                resumed = await other.resume(spec.conversation_id)
                assert resumed.state is SandboxState.RUNNING
            finally:
                await other.close()
            found = await asyncio.to_thread(
                sandbox_processes, swarm_cluster, settings.install, spec.conversation_id
            )
            assert found and all(state != "T" for _, state in found), found
            assert docker(swarm_cluster.manager, "service", "ps", "-q", names.sandbox).split() == tasks_before
            assert (await made.find(spec.conversation_id)).state is SandboxState.RUNNING  # type: ignore[union-attr]
        # Removal takes the paused marker too, even when removed while paused.
        await made.pause(spec.conversation_id)
        assert await made.remove(spec.conversation_id)
        assert await made.engine.config_data(names.paused_config) is None
    finally:
        for left in await made.list():
            await made.remove(left.conversation_id)
        await made.close()


async def test_usage_is_measured_where_the_task_runs_on_the_manager(
    swarm_cluster: Cluster, tmp_path: Path
) -> None:
    settings = swarm_settings(swarm_cluster, tmp_path / "state", swarm_constraints=["node.role==manager"])
    made = await SwarmRuntime.connect(settings)
    try:
        spec = make_spec()
        assert await made.usage(spec.conversation_id) is None
        await made.start(spec)
        used = await made.usage(spec.conversation_id)
        assert used is not None and used.memory_bytes and used.cpu_seconds and used.pids
        await made.remove(spec.conversation_id)
        assert await made.usage(spec.conversation_id) is None
    finally:
        await made.close()


async def test_a_container_on_the_reach_network_reaches_the_relay(
    swarm_cluster: Cluster, tmp_path: Path
) -> None:
    """swarm_reach=network: what a gateway container attached to swarm_network is given works."""
    settings = swarm_settings(swarm_cluster, tmp_path / "state")
    made = await SwarmRuntime.connect(settings)
    inside = await SwarmRuntime.connect(settings.model_copy(update={"swarm_reach": "network"}))
    try:
        spec = make_spec()
        await made.start(spec)
        found = await inside.find(spec.conversation_id)
        assert found is not None and found.base_url.startswith("http://10.96.")
        ready = f"{found.base_url}/ready"
        probe = f"import urllib.request; print(urllib.request.urlopen('{ready}', timeout=10).status)"
        answer = await asyncio.to_thread(
            docker,
            swarm_cluster.manager,
            "run",
            "--rm",
            "--network",
            settings.swarm_network,
            "--entrypoint",
            "python3",
            settings.docker_image,
            "-c",
            probe,
        )
        assert answer.strip() == "200"
        await made.remove(spec.conversation_id)
    finally:
        await inside.close()
        await made.close()
