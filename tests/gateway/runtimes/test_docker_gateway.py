"""The real gateway on the Docker runtime: noisy neighbours, delete, kill -9, orphans."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from dockertools import (
    FORK_BOMB,
    MEMORY_HOG,
    Agent,
    adocker,
    alabelled,
    create,
    status,
    volunteer_agent_for_oom,
    wait_status,
)

from gateway.app import create_app
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings
from tests.helpers import eventually, free_port

pytestmark = pytest.mark.docker

MiB = 1024 * 1024
Serve = Callable[..., AbstractAsyncContextManager[str]]


OUTPUT_FLOOD = {"type": "Shell", "command": "yes convoy | head -c 300000000"}
# The memory hog, in a sandbox whose agent is the OOM killer's first choice: the task
# inherits the agent's score and takes its own back to 0 first.
AGENT_HOG = {
    "type": "Python",
    "code": "open('/proc/self/oom_score_adj', 'w').write('0')\n" + MEMORY_HOG["code"],
}
OOM_KILLS = (
    "cat /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events 2>/dev/null | grep oom_kill"
)


async def test_a_fork_bomb_a_memory_hog_and_an_output_flood_leave_the_neighbours_answering(
    serve: Serve, docker_settings: Settings, docker_runtime: DockerRuntime
) -> None:
    app = create_app(docker_settings, runtime=docker_runtime)
    async with serve(app) as base, httpx.AsyncClient(timeout=60) as client:
        limits = {"memory_bytes": 256 * MiB, "pids": 128}
        noisy, quiet = await asyncio.gather(
            create(client, base, title="noisy", limits=limits), create(client, base, title="quiet")
        )
        agent = Agent(client, f"{base}/conversation/{noisy}")

        async def storm(runnable: dict[str, Any]) -> dict[str, Any]:
            """Run ``runnable`` in the noisy conversation; the gateway and the quiet one answer throughout."""
            task = await agent.start_task(runnable)
            while True:
                assert (await client.get(f"{base}/health")).status_code == 200
                info = await client.get(f"{base}/conversation/{quiet}/agent-info")
                assert info.status_code == 200, info.text
                current = (await agent.get(f"/task/{task['id']}")).json()
                if current["status"] in ("COMPLETED", "ERROR", "CANCELLED"):
                    return dict(current)
                await asyncio.sleep(0.5)

        bomb = await storm(FORK_BOMB)
        assert bomb["status"] == "ERROR" and "timed out" in bomb["error"], bomb  # the whole group ended
        hog = await storm(MEMORY_HOG)
        assert hog["status"] == "ERROR" and hog["exit_code"] == -9, hog
        flood = await storm(OUTPUT_FLOOD)
        assert flood["status"] == "COMPLETED" and flood["output_truncated"] is True, flood

        # The hog died of the sandbox's memory limit: the kernel's OOM killer says so.
        task, output = await agent.shell(OOM_KILLS)
        assert task["status"] == "COMPLETED" and int(output.split()[-1]) >= 1, output
        # The noisy conversation itself survives all three.
        assert await status(client, base, noisy) == "READY"
        assert (await agent.get("/agent-info")).status_code == 200


async def test_a_memory_hog_that_takes_its_agent_down_ends_the_conversation_as_oom(
    serve: Serve, docker_settings: Settings, docker_runtime: DockerRuntime
) -> None:
    settings = docker_settings.model_copy(update={"reconcile_interval": 1.0})
    app = create_app(settings, runtime=docker_runtime)
    async with serve(app) as base, httpx.AsyncClient(timeout=60) as client:
        victim = await create(client, base, title="victim", limits={"memory_bytes": 128 * MiB})
        # The agent is made the OOM killer's first choice from outside (a task cannot touch it).
        await volunteer_agent_for_oom(cfg.Names.of(settings.install, UUID(victim)).sandbox)
        await Agent(client, f"{base}/conversation/{victim}").start_task(AGENT_HOG)
        await wait_status(client, base, victim, "ERROR")
        reason = (await client.get(f"{base}/conversation/{victim}")).json()["reason"]
        assert "out of memory" in reason and "OOM" in reason, reason


async def test_delete_leaves_no_container_volume_or_network(
    serve: Serve, docker_settings: Settings, docker_runtime: DockerRuntime
) -> None:
    app = create_app(docker_settings, runtime=docker_runtime)
    async with serve(app) as base, httpx.AsyncClient(timeout=60) as client:
        conversation_id = await create(client, base, title="short-lived")
        assert any((await alabelled(f"convoy.conversation-id={conversation_id}")).values())
        response = await client.delete(f"{base}/conversation/{conversation_id}")
        assert response.status_code == 204, response.text
        assert (await client.get(f"{base}/conversation/{conversation_id}")).status_code == 404
    # The 204 comes once the sandbox is stopped; its removal and the rest follow at once.
    await eventually(nothing_left(conversation_id), within=30, what="everything of it removed")


def nothing_left(conversation_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not any((await alabelled(f"convoy.conversation-id={conversation_id}")).values())

    return check


async def test_a_gateway_killed_right_after_a_delete_answered_leaves_nothing_once_restarted(
    docker_settings: Settings,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=60) as client:
        async with gateway_process(docker_settings, port, stop_grace=0) as first:
            doomed = await create(client, base, title="doomed")
            assert (await client.delete(f"{base}/conversation/{doomed}")).status_code == 204
            first.send_signal(signal.SIGKILL)
            await first.wait()
        state = await adocker(
            "ps", "-a", "--format", "{{.State}}", "--filter", f"label={cfg.ROLE}={cfg.SANDBOX}",
            "--filter", f"label={cfg.CONVERSATION_ID}={doomed}",
        )  # fmt: skip
        assert state.strip() in ("", "exited", "removing"), f"the 204 came with the sandbox {state}"
        async with gateway_process(docker_settings, port):
            # Seen at most as an exited sandbox, never adopted; whatever is left is removed.
            assert await status(client, base, doomed) is None
            await eventually(nothing_left(doomed), within=120, what="what the delete left is removed")
            assert await status(client, base, doomed) is None


@contextlib.asynccontextmanager
async def gateway_process(
    settings: Settings, port: int, stop_grace: float = 30
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``convoy serve`` on the Docker runtime as a subprocess; killed (SIGKILL) at the end if still alive."""
    env = os.environ | {
        "CONVOY_INSTALL": settings.install,
        "CONVOY_DOCKER_IMAGE": settings.docker_image,
        "CONVOY_DOCKER_REACH": "published",
        "CONVOY_DOCKER_STOP_GRACE": str(stop_grace),
        "CONVOY_START_TIMEOUT": "120",
        "CONVOY_RECONCILE_INTERVAL": "2",
        "CONVOY_STATE_DIR": str(settings.state_dir),
        "CONVOY_POOL_SIZE": "0",  # a gateway killed with SIGKILL would leave its spares (by design)
    }
    convoy = Path(sys.executable).with_name("convoy")
    process = await asyncio.create_subprocess_exec(
        str(convoy), "serve", "--runtime", "docker", "--host", "127.0.0.1", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def healthy() -> bool:
                assert process.returncode is None, "the gateway exited"
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(healthy, within=60, what="the gateway answers /health")
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()


async def test_kill_9_and_restart_finds_every_conversation_with_its_events(docker_settings: Settings) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=60) as client:
        async with gateway_process(docker_settings, port) as first:
            kept = await create(client, base, title="kept")
            for n in range(3):
                response = await client.post(
                    f"{base}/conversation/{kept}/event", json={"detail": {"type": "note", "n": n}}
                )
                assert response.status_code in (200, 201), response.text
            before = (await client.get(f"{base}/conversation/{kept}/event", params={"limit": 100})).json()
            first.send_signal(signal.SIGKILL)
            await first.wait()
        async with gateway_process(docker_settings, port):
            await wait_status(client, base, kept, "READY")
            after = (await client.get(f"{base}/conversation/{kept}/event", params={"limit": 100})).json()
            assert after["results"][: len(before["results"])] == before["results"]
            assert [
                event["detail"].get("n") for event in after["results"] if event["detail"]["type"] == "note"
            ] == [
                0,
                1,
                2,
            ]
            assert (await client.delete(f"{base}/conversation/{kept}")).status_code == 204
            await eventually(nothing_left(kept), within=30, what="everything of it removed")


async def test_a_conversation_whose_delete_the_gateway_did_not_finish_is_removed_at_the_next_start(
    docker_settings: Settings,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=60) as client:
        async with gateway_process(docker_settings, port) as first:
            doomed = await create(client, base, title="doomed")
            # A task that ignores SIGTERM keeps the sandbox stopping for a while.
            agent = Agent(client, f"{base}/conversation/{doomed}")
            await agent.start_task({"type": "Shell", "command": "trap '' TERM; sleep 600"})
            deleting = asyncio.create_task(client.delete(f"{base}/conversation/{doomed}"))

            async def stopping() -> bool:
                return await status(client, base, doomed) in ("STOPPING", None)

            await eventually(stopping, within=60, what="the delete began")
            first.send_signal(signal.SIGKILL)
            await first.wait()
            with contextlib.suppress(httpx.HTTPError):
                await deleting
        # The killed gateway left the conversation half-deleted (its sandbox stopping or
        # stopped, volume and socket directory still there: no internet, so no network or
        # relay); the next gateway removes it.
        left = await alabelled(f"convoy.conversation-id={doomed}")
        assert left["volumes"] and not left["networks"], left
        assert docker_settings.docker_socket_dir is not None  # tests/conftest.py sets one
        directory = docker_settings.docker_socket_dir / docker_settings.install / doomed
        assert await asyncio.to_thread(directory.exists)
        names = cfg.Names.of(docker_settings.install, UUID(doomed))
        with contextlib.suppress(AssertionError):
            await adocker("stop", "-t", "1", names.sandbox)
        async with gateway_process(docker_settings, port):

            async def removed() -> bool:
                return not any((await alabelled(f"convoy.conversation-id={doomed}")).values())

            await eventually(removed, within=120, what="the orphaned sandbox is removed")
            assert await status(client, base, doomed) != "READY"
            assert not await asyncio.to_thread(directory.exists)
