"""Gateway fixtures: a runtime (memory, process, and Docker where marked) and gateways served on it.

``harness`` runs on the memory runtime (agents inside the test's own process
and event loop: the fast default for everything above the seam);
``process_harness`` on the process runtime, for tests that need a real agent
process (its environment, its process group, killing it, its files);
``any_harness`` is parametrised over ``process``, ``docker`` and ``swarm`` (the
Docker one is marked ``docker`` and skipped where no engine or image is there; the
Swarm one is marked ``swarm`` and runs on the session's three-node cluster,
``tests/gateway/swarm_cluster.py``). A harness serves as many gateways as a
test wants, one after the other, on the same runtime - a restarted gateway is
just a second ``async with harness.serve()``. Teardown removes every sandbox
the test left, and kills any agent process still alive under the state dir.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gw_helpers import Harness, Serve, base_settings
from process_agents import kill_agents

from gateway.runtimes.base import Runtime
from gateway.runtimes.memory import MemoryRuntime
from gateway.runtimes.process import ProcessRuntime
from gateway.settings import Settings
from tests.gateway.swarm_cluster import (  # the session's Swarm, for tests marked swarm
    Cluster,
    swarm_cluster,
    swarm_settings,
)

__all__ = ["swarm_cluster"]


async def _runtime(kind: str, settings: Settings) -> Runtime:
    if kind == "swarm":
        from gateway.runtimes.swarm import SwarmRuntime

        swarm: Runtime = await SwarmRuntime.connect(settings)
        return swarm
    if kind == "docker":
        from gateway.runtimes.docker import DockerRuntime

        runtime: Runtime = await DockerRuntime.connect(settings)
        return runtime
    if kind == "memory":
        return MemoryRuntime(settings)
    return ProcessRuntime(settings)


@asynccontextmanager
async def _harness(
    kind: str, tmp_path: Path, serve: Serve, cluster: Cluster | None = None
) -> AsyncIterator[Harness]:
    if cluster is not None:
        # A start that fails on swarm fails at its timeout (a 6 MiB agent crawls, it is not killed):
        # shorter than the tests' 60 s wait for its ERROR.
        settings = swarm_settings(cluster, tmp_path / "state", start_timeout=40.0, docker_stop_grace=2.0)
    else:
        settings = base_settings(tmp_path / "state", runtime=kind)
    runtime = await _runtime(kind, settings)
    try:
        yield Harness(settings, runtime, serve, cluster=cluster)
    finally:
        for handle in await runtime.list():
            await runtime.remove(handle.conversation_id)
        for snapshot in await runtime.snapshots():  # a safety net: the tests remove theirs
            await runtime.remove_snapshot(snapshot.id)
        if hasattr(runtime, "orphan_age"):
            # The test is over: nothing of its installation is starting, so a pair created but
            # never started (a start interrupted at the gateway's shutdown) is no longer young.
            runtime.orphan_age = 0.0
        await runtime.cleanup_orphans()
        await runtime.close()
        kill_agents(settings.state_dir)


@pytest.fixture
async def harness(tmp_path: Path, serve: Serve) -> AsyncIterator[Harness]:
    async with _harness("memory", tmp_path, serve) as made:
        yield made


@pytest.fixture
async def process_harness(tmp_path: Path, serve: Serve) -> AsyncIterator[Harness]:
    async with _harness("process", tmp_path, serve) as made:
        yield made


@pytest.fixture
async def docker_harness(tmp_path: Path, serve: Serve) -> AsyncIterator[Harness]:
    """The Docker runtime only; its tests are marked ``docker`` themselves."""
    async with _harness("docker", tmp_path, serve) as made:
        yield made


@pytest.fixture(
    params=[
        "process",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=pytest.mark.swarm),
    ]
)
async def any_harness(request: pytest.FixtureRequest, tmp_path: Path, serve: Serve) -> AsyncIterator[Harness]:
    """Process, Docker and Swarm (the session's cluster). A test that needs what a swarm cannot
    do is marked ``no_swarm(reason)``."""
    kind = str(request.param)
    cluster = None
    if kind == "swarm":
        refused = request.node.get_closest_marker("no_swarm")
        if refused is not None:
            pytest.skip(f"not on swarm: {refused.args[0] if refused.args else 'unsupported there'}")
        cluster = request.getfixturevalue("swarm_cluster")
    async with _harness(kind, tmp_path, serve, cluster) as made:
        yield made


@pytest.fixture
def agent_env() -> dict[str, str]:
    """The environment for a gateway subprocess (the tests' own, minus any CONVOY_ settings)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CONVOY_")}
