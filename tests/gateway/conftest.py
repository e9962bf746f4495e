"""Gateway fixtures: a runtime (memory, process, and Docker where marked) and gateways served on it.

``harness`` runs on the memory runtime (agents inside the test's own process
and event loop: the fast default for everything above the seam);
``process_harness`` on the process runtime, for tests that need a real agent
process (its environment, its process group, killing it, its files);
``any_harness`` is parametrised over ``process`` and ``docker`` (the Docker one
is marked ``docker`` and skipped where no engine or image is there). A harness serves as many gateways as a
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
from gw_helpers import Harness, Serve, base_settings, kill_agents

from gateway.runtimes.base import Runtime
from gateway.runtimes.memory import MemoryRuntime
from gateway.runtimes.process import ProcessRuntime
from gateway.settings import Settings


async def _runtime(kind: str, settings: Settings) -> Runtime:
    if kind == "docker":
        from gateway.runtimes.docker import DockerRuntime

        runtime: Runtime = await DockerRuntime.connect(settings)
        return runtime
    if kind == "memory":
        return MemoryRuntime(settings)
    return ProcessRuntime(settings)


@asynccontextmanager
async def _harness(kind: str, tmp_path: Path, serve: Serve) -> AsyncIterator[Harness]:
    settings = base_settings(tmp_path / "state", runtime=kind)
    runtime = await _runtime(kind, settings)
    try:
        yield Harness(settings, runtime, serve)
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


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
async def any_harness(request: pytest.FixtureRequest, tmp_path: Path, serve: Serve) -> AsyncIterator[Harness]:
    async with _harness(str(request.param), tmp_path, serve) as made:
        yield made


@pytest.fixture
def agent_env() -> dict[str, str]:
    """The environment for a gateway subprocess (the tests' own, minus any CONVOY_ settings)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CONVOY_")}
