"""One bench run's Docker installation, shared by the Docker benches (``from docker_installation
import Gateway``: scripts/ is on the path of a script run from it).

Everything a bench starts carries this run's installation name (:data:`INSTALL`, a fresh one
per process): the ``convoy serve`` gateways (:class:`Gateway`), their sandboxes, and the
containers :func:`run_until_healthy` starts to measure the floor. :func:`cleanup` removes
whatever of it is left, sockets directory included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchtools import free_port

IMAGE = os.environ.get("CONVOY_DOCKER_IMAGE", "convoy-sandbox:latest")
INSTALL = f"bench-{secrets.token_hex(4)}"
#: The agents' socket directories (network-less sandboxes) of this run only, removed at the end.
SOCKETS = Path(tempfile.gettempdir()) / f"convoy-{INSTALL}"


async def sh(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err.decode().strip()}")
    return out.decode().strip()


async def poll(client: httpx.AsyncClient, url: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.01)
    raise TimeoutError(url)


async def run_until_healthy(client: httpx.AsyncClient, *arguments: str) -> float:
    """Seconds from ``docker run -d ARGUMENTS`` (the agent's port published on loopback, the
    container labelled for :func:`cleanup`) until its agent's /health answers; then removed."""
    name = f"convoy-{INSTALL}-floor-{secrets.token_hex(3)}"
    began = time.monotonic()
    await sh(
        "docker", "run", "-d", "--name", name, "--label", f"convoy.install={INSTALL}",
        "-p", "127.0.0.1::8080", *arguments,
    )  # fmt: skip
    try:
        port = (await sh("docker", "port", name, "8080/tcp")).splitlines()[0].rsplit(":", 1)[1]
        await poll(client, f"http://127.0.0.1:{port}/health")
        return time.monotonic() - began
    finally:
        await sh("docker", "rm", "-f", name)


async def floor_once(client: httpx.AsyncClient, image: str = IMAGE) -> float:
    """``docker run`` of the sandbox image, until its agent's /health answers."""
    return await run_until_healthy(client, "-e", f"CONVOY_AGENT_TOKEN={secrets.token_hex(8)}", image)


class Gateway:
    def __init__(self, image: str = IMAGE, pool_size: int = 0) -> None:
        self.image = image
        self.pool_size = pool_size  # no pool by default: these figures are of cold starts
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, client: httpx.AsyncClient) -> None:
        env = os.environ | {
            "CONVOY_INSTALL": INSTALL,
            "CONVOY_DOCKER_IMAGE": self.image,
            "CONVOY_MAX_CONVERSATIONS": "1000",
            "CONVOY_MAX_CONVERSATIONS_PER_USER": "1000",
            "CONVOY_CREATE_BURST": "1000",  # the bench creates hundreds at once
            "CONVOY_START_TIMEOUT": "300",
            "CONVOY_POOL_SIZE": str(self.pool_size),
            "CONVOY_DOCKER_SOCKET_DIR": str(SOCKETS),
        }
        convoy = Path(sys.executable).with_name("convoy")
        self.process = await asyncio.create_subprocess_exec(
            str(convoy), "serve", "--runtime", "docker", "--port", str(self.port),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await poll(client, f"{self.base}/health", within=60)

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 60)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def create(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore | None = None, template: str | None = None
    ) -> tuple[str, float]:
        if gate is not None:
            async with gate:
                return await self.create(client, template=template)
        began = time.monotonic()
        response = await client.post(
            f"{self.base}/conversation", json={"title": "bench", "template": template}
        )
        response.raise_for_status()
        conversation_id = str(response.json()["id"])
        while True:
            state = (await client.get(f"{self.base}/conversation/{conversation_id}")).json()
            if state["status"] == "READY":
                return conversation_id, time.monotonic() - began
            if state["status"] == "ERROR":
                raise RuntimeError(f"conversation failed: {state.get('reason')}")
            await asyncio.sleep(0.01)

    async def p99(
        self, client: httpx.AsyncClient, ids: list[str], samples: int = 300, window: float = 10.0
    ) -> float:
        """The p99 of ``GET /conversation/{id}`` over random ``ids``, asked back to back (one at a
        time: what one client sees) for at least ``samples`` requests and ``window`` seconds, so
        that the gateway's periodic loops (its sync every 2 s) run several times meanwhile. A
        first request, not counted, opens the connection."""
        (await client.get(f"{self.base}/conversation/{ids[0]}")).raise_for_status()
        latencies: list[float] = []
        ends = time.monotonic() + window
        while len(latencies) < samples or time.monotonic() < ends:
            began = time.perf_counter()
            response = await client.get(f"{self.base}/conversation/{random.choice(ids)}")
            latencies.append(time.perf_counter() - began)
            response.raise_for_status()
        return statistics.quantiles(latencies, n=100)[98]


async def cleanup() -> None:
    """Remove whatever of this run is left (the gateway leaves sandboxes running by design)."""
    label = f"label=convoy.install={INSTALL}"
    for _ in range(10):
        left = 0
        for kind in (["ps", "-aq"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
            found = (await sh("docker", *kind, "--filter", label)).split()
            left += len(found)
            if found:
                remove = ["rm", "-f", "-v"] if kind[0] == "ps" else [kind[0], "rm"]
                with contextlib.suppress(RuntimeError):  # already being removed: look again
                    await sh("docker", *remove, *found)
        if not left:
            break
        await asyncio.sleep(2)
    await asyncio.to_thread(shutil.rmtree, SOCKETS, True)
