"""A real OOM kill under the sandbox's memory limit: the task says "out of memory", the agent answers on."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from dockertools import MEMORY_HOG, Agent, create, status

from gateway.app import create_app
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings

pytestmark = pytest.mark.docker

MiB = 1024 * 1024
Serve = Callable[..., AbstractAsyncContextManager[str]]


async def test_a_task_killed_by_the_oom_killer_ends_out_of_memory(
    serve: Serve, docker_settings: Settings, docker_runtime: DockerRuntime
) -> None:
    app = create_app(docker_settings, runtime=docker_runtime)
    async with serve(app) as base, httpx.AsyncClient(timeout=60) as client:
        conversation = await create(client, base, title="oom", limits={"memory_bytes": 128 * MiB})
        agent = Agent(client, f"{base}/conversation/{conversation}")

        hog, _ = await agent.run(MEMORY_HOG)
        assert hog["status"] == "ERROR" and hog["exit_code"] == -9, hog
        assert "out of memory" in hog["error"], hog

        # The agent itself survived: it answers, and runs the next task as usual.
        assert (await agent.get("/agent-info")).status_code == 200
        assert await status(client, base, conversation) == "READY"
        task, output = await agent.shell("echo still here")
        assert task["status"] == "COMPLETED" and output == "still here\n", task
