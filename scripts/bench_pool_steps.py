"""Where the time of warm create -> first ``echo hi`` goes, step by step (scripts/bench_pool.py).

Two views, medians of ``runs`` each:

- the client's, through a gateway (``GatewaySteps``): ``create()`` (one POST, answered READY),
  the first ``echo hi`` until the task exists (its first record) and until done, then a second
  ``echo hi`` on the same conversation (what a command costs once nothing is first any more);
- straight to the agents, with no gateway (:func:`direct_steps`): the runtime in this process
  makes spares as the pool does, and times its listing (a create lists twice: its limits'
  two checks), the claim, and the first and second ``echo hi`` over the spare's own socket,
  each with the agent's CPU time (from ``/proc``: what the machine's load does not change).

The difference between the two views is the gateway's and the client's share.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker_installation as installation
import httpx

from gateway.agent_transport import AgentTransport
from gateway.client import AsyncConversationHandle, shell
from gateway.pool_refill import spare_spec
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxHandle
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings
from sandbox_agent.protocol import TOKEN_HEADER

ECHO = {"runnable": {"type": "Shell", "command": "echo hi"}}


@dataclasses.dataclass
class Steps:
    """Samples (seconds) by step name, in the order they were first added."""

    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def lines(self, unit: str = "ms") -> list[str]:
        return [
            f"    {name:<46}{statistics.median(values) * 1000:7.1f} {unit}"
            for name, values in self.samples.items()
        ]


async def command_steps(handle: AsyncConversationHandle, steps: Steps, began: float) -> None:
    """The first and a second ``echo hi`` of a conversation just created at ``began``."""
    created = time.perf_counter()
    steps.add("create() (POST answered READY)", created - began)
    run = await handle.start_streaming(shell("echo hi"))
    steps.add("first echo: the task exists (first record)", time.perf_counter() - created)
    result = await run.wait()
    await run.close()
    assert result.stdout.strip() == "hi", result
    done = time.perf_counter()
    steps.add("first echo: done", done - created)
    steps.add("create -> first echo done", done - began)
    again = await handle.run("echo hi")
    assert again.stdout.strip() == "hi", again
    steps.add("second echo on it (nothing first any more)", time.perf_counter() - done)


def _agent_cpu(sandbox_pid: int) -> float:
    """Seconds of CPU the agent (the child of the container's init) has used."""
    children = Path(f"/proc/{sandbox_pid}/task/{sandbox_pid}/children").read_text().split()
    pid = int(children[0]) if children else sandbox_pid
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


async def _echo(client: httpx.AsyncClient, handle: SandboxHandle) -> None:
    headers = {TOKEN_HEADER: handle.spec.token}
    url = f"{handle.base_url}/task"
    async with client.stream("POST", url, params={"wait": "true"}, headers=headers, json=ECHO) as answer:
        assert answer.status_code == 201, answer.status_code
        async for _ in answer.aiter_lines():
            pass


async def direct_steps(runs: int) -> tuple[Steps, Steps]:
    """Wall times and the agent's CPU times of each step, straight to spares (module docstring)."""
    state_dir = Path(tempfile.mkdtemp(prefix="convoy-bench-"))
    settings = Settings(
        install=installation.INSTALL,
        runtime="docker",
        docker_image=installation.IMAGE,
        state_dir=state_dir,
        pool_size=0,
        start_timeout=300,
    )
    runtime = await DockerRuntime.connect(settings)
    wall, cpu = Steps(), Steps()
    try:
        async with httpx.AsyncClient(transport=AgentTransport(), timeout=60) as client:
            for _ in range(runs):
                await _one_direct(runtime, client, wall, cpu)
    finally:
        for handle in await runtime.list():
            await runtime.remove(handle.conversation_id)
        await runtime.close()
        await asyncio.to_thread(shutil.rmtree, state_dir, True)  # its sockets' folders too
    return wall, cpu


async def _one_direct(runtime: DockerRuntime, client: httpx.AsyncClient, wall: Steps, cpu: Steps) -> None:
    spares = [await runtime.start(spare_spec("default")) for _ in range(2)]  # the bench's pool size
    try:
        spare = spares[0]
        names = cfg.Names.of(installation.INSTALL, spare.conversation_id)
        pid = int(await installation.sh("docker", "inspect", "-f", "{{.State.Pid}}", names.sandbox))

        @contextlib.contextmanager
        def measured(name: str) -> Iterator[None]:
            used, began = _agent_cpu(pid), time.perf_counter()
            yield
            wall.add(name, time.perf_counter() - began)
            cpu.add(f"{name} (agent CPU)", _agent_cpu(pid) - used)

        began = time.perf_counter()
        await runtime.list()
        wall.add("runtime.list() with 2 spares (twice a create)", time.perf_counter() - began)
        spec = dataclasses.replace(spare.spec, owner="bench", token=secrets.token_urlsafe(32), pool=None)
        with measured("claim (POST /claim)"):
            claimed = await runtime.claim(spare, spec)
        with measured("first echo, done"):
            await _echo(client, claimed)
        with measured("second echo, done"):
            await _echo(client, claimed)
    finally:
        for each in spares:
            await runtime.remove(each.conversation_id)


def loaded() -> str:
    """The machine's load, for the figures' context."""
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())
