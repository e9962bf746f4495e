"""Docker runtime benchmark: prints, side by side in one run,

1. cold start: ``docker run`` of the sandbox image until its /health answers (the floor)
   vs POST /conversation -> READY through a real gateway (``convoy serve``);
2. the memory of an idle sandbox (and of its relay) as the engine reports it;
3. the density ladder: idle conversations added ``--step`` at a time up to ``--max`` (500),
   and how many fit before the gateway's p99 for GET /conversation/{id} passed 100 ms; at each step
   the p99, what the engine charges a conversation and what the host gives each one.

Everything it starts carries an installation name of its own and is removed at the end.
Targets (ARCHITECTURE.md): start within 1.1x of the floor, an idle conversation (sandbox
and relay) under 30 MiB, 500 idle conversations with the gateway's p99 under 100 ms.

``--memory-only --image A --image B`` measures only (2), for each image in turn
through its own gateway, so two builds are compared side by side in one run.
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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from benchtools import bench_arguments, free_port

from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker import AiodockerEngine

IMAGE = os.environ.get("CONVOY_DOCKER_IMAGE", "convoy-sandbox:latest")
INSTALL = f"bench-{secrets.token_hex(4)}"
#: The agents' socket directories (network-less sandboxes) of this run only, removed at the end.
SOCKETS = Path(tempfile.gettempdir()) / f"convoy-{INSTALL}"
MiB = 1024 * 1024
#: The target: the gateway's p99 for GET /conversation/{id}, in seconds.
TARGET_P99 = 0.100


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


def memory(stats: dict[str, Any]) -> float:
    """What ``docker stats`` shows: usage less the page cache (cgroup v1 and v2)."""
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
    return float(mem.get("usage", 0) - cache)


def agent_status(sandbox_pid: int) -> dict[str, int]:
    """``VmRSS`` and ``RssAnon`` (kB) of the agent: the child of the container's init
    (the runtime starts sandboxes with ``Init``), else the container's first process.
    Empty when the engine's processes are not visible here (a remote engine)."""
    try:
        children = Path(f"/proc/{sandbox_pid}/task/{sandbox_pid}/children").read_text().split()
        pid = int(children[0]) if children else sandbox_pid
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split(":", 1) for line in lines)
    return {key: int(value.split()[0]) for key, value in fields if key in ("VmRSS", "RssAnon")}


async def idle_memory(engine: AiodockerEngine, conversation_id: str) -> str:
    """One line: what the engine charges the sandbox and its relay, and the agent's RSS."""
    names = cfg.Names.of(INSTALL, UUID(conversation_id))
    sandbox = memory(await engine.stats(names.sandbox))
    relay = await relay_memory(engine, names)
    info = await engine.inspect(names.sandbox)
    status = agent_status(int(((info or {}).get("State") or {}).get("Pid") or 0))
    agent = (
        f"; agent RSS {status['VmRSS'] / 1024:.1f} MiB (anonymous {status['RssAnon'] / 1024:.1f} MiB)"
        if status
        else ""
    )
    return (
        f"sandbox {sandbox / MiB:5.1f} MiB ({sandbox / 1e6:.1f} MB), relay {relay / MiB:5.1f} MiB, "
        f"conversation {(sandbox + relay) / MiB:5.1f} MiB{agent}"
    )


async def relay_memory(engine: AiodockerEngine, names: cfg.Names) -> float:
    """What the engine charges the relay; 0 for a sandbox with no network (it has none)."""
    return memory(await engine.stats(names.relay)) if await engine.inspect(names.relay) else 0.0


async def engine_memory(engine: AiodockerEngine, conversation_ids: list[str], sample: int = 5) -> float:
    """What the engine charges a conversation (sandbox + relay), on average over ``sample`` of
    ``conversation_ids`` spread over all of them (the oldest have settled to idle, the newest not yet)."""
    step = max(1, len(conversation_ids) // sample)
    chosen = conversation_ids[::step][:sample]
    total = 0.0
    for conversation_id in chosen:
        names = cfg.Names.of(INSTALL, UUID(conversation_id))
        total += memory(await engine.stats(names.sandbox)) + await relay_memory(engine, names)
    return total / len(chosen)


def host_available() -> int:
    """The host's ``MemAvailable`` in bytes: what every conversation costs, containerd's
    shims, fuse-overlayfs and docker-proxy included (0 when not on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


async def memory_only(images: list[str], samples: int) -> None:
    """Idle memory of each image in turn, each through a gateway of its own."""
    engine = await AiodockerEngine.open(None)
    async with httpx.AsyncClient(timeout=120) as client:
        try:
            for image in images:
                gateway = Gateway(image)
                try:
                    await gateway.start(client)
                    ids = [(await gateway.create(client))[0] for _ in range(samples)]
                    await asyncio.sleep(5)  # let the agents settle to idle
                    for conversation_id in ids:
                        print(f"{image:<28} idle: {await idle_memory(engine, conversation_id)}")
                        await client.delete(f"{gateway.base}/conversation/{conversation_id}")
                finally:
                    await gateway.stop()
        finally:
            await asyncio.shield(teardown(Gateway(), engine))


async def main(runs: int, cap: int, step: int, window: float) -> None:
    engine = await AiodockerEngine.open(None)
    gateway = Gateway()
    async with httpx.AsyncClient(timeout=120) as client:
        try:
            print(f"image {IMAGE}, install {INSTALL}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
            await floor_once(client)  # warm the page cache for both sides
            floors, starts = [], []
            await gateway.start(client)
            ids: list[str] = []
            for _ in range(runs):
                floors.append(await floor_once(client))
                conversation_id, took = await gateway.create(client)
                starts.append(took)
                ids.append(conversation_id)
            floor, start = statistics.median(floors), statistics.median(starts)
            print(f"cold start, median of {runs}:  docker run -> /health {floor * 1000:7.0f} ms")
            ratio = start / floor
            print(f"{'':28}create -> READY   {start * 1000:7.0f} ms   ratio {ratio:.2f}x")

            await asyncio.sleep(5)  # let the agents settle to idle
            print(f"idle memory (engine):      {await idle_memory(engine, ids[0])}")
            await ladder(engine, gateway, client, ids, cap, step, window)

            removed = time.monotonic()
            for chunk in range(0, len(ids), 20):
                await asyncio.gather(
                    *(client.delete(f"{gateway.base}/conversation/{i}") for i in ids[chunk : chunk + 20])
                )
            print(f"deleted {len(ids)} conversations in {time.monotonic() - removed:.1f} s")
        finally:
            await asyncio.shield(teardown(gateway, engine))


async def ladder(
    engine: AiodockerEngine,
    gateway: Gateway,
    client: httpx.AsyncClient,
    ids: list[str],
    cap: int,
    step: int,
    window: float,
) -> None:
    """The density ladder: ``step`` more idle conversations at a time up to ``cap``; at each
    step the p99 of GET /conversation/{id} (over ``window`` seconds), what the engine and the
    host give each conversation, and the step's verdict. Every step runs: a p99 past the
    target stops nothing, it only ends the run of steps that fitted."""
    gate = asyncio.Semaphore(4)  # starts in flight: 2 cores
    fitted = len(ids) if await gateway.p99(client, ids, window=window) <= TARGET_P99 else 0
    base_count, available = len(ids), host_available()
    print(
        f"density ladder up to {cap}, {step} a step, p99 over {window:g} s a step "
        f"(host memory available {available / 2**30:.1f} GiB; target p99 {TARGET_P99 * 1000:.0f} ms):"
    )
    while len(ids) < cap:
        batch = min(step, cap - len(ids))
        created = await asyncio.gather(*(gateway.create(client, gate) for _ in range(batch)))
        ids += [conversation_id for conversation_id, _ in created]
        p99 = await gateway.p99(client, ids, window=window)
        engine_mib = await engine_memory(engine, ids) / MiB
        host_mib = (available - host_available()) / (len(ids) - base_count) / MiB
        verdict = "ok" if p99 <= TARGET_P99 else "OVER"
        print(
            f"  {len(ids):4d} idle conversations: p99 GET /conversation/{{id}}"
            f" {p99 * 1000:6.1f} ms {verdict:<4}"
            f" | per conversation: engine {engine_mib:5.1f} MiB, host {host_mib:5.1f} MiB"
            f" | load {os.getloadavg()[0]:.1f}"
        )
        if p99 <= TARGET_P99 and fitted == len(ids) - batch:
            fitted = len(ids)
    verdict = "every step" if fitted >= cap else "then the p99 passed 100 ms"
    print(f"idle conversations with p99 <= {TARGET_P99 * 1000:.0f} ms: {fitted} ({verdict}, max {cap})")


async def teardown(gateway: Gateway, engine: AiodockerEngine) -> None:
    """Stop the gateway and remove everything of this run, whatever ended it."""
    try:
        await gateway.stop()
        await engine.close()
    finally:
        await cleanup()


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


async def interruptible(run: Coroutine[Any, Any, None]) -> int:
    """``run``, cancelled by SIGINT, SIGTERM or SIGHUP (its ``finally`` blocks clean up); the
    exit status: 0, or 128 + the signal."""
    task = asyncio.ensure_future(run)
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop, signum)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
        print(f"interrupted (signal {received[0]}): everything of {INSTALL} removed", file=sys.stderr)
        return 128 + received[0]
    return 0


if __name__ == "__main__":
    parser = bench_arguments(__doc__, runs=5, runs_help="cold starts measured on each side")
    parser.add_argument(
        "--max", "--cap", dest="cap", type=int, default=500, help="most idle conversations to try"
    )
    parser.add_argument("--step", type=int, default=20, help="conversations added per step")
    parser.add_argument(
        "--window", type=float, default=10.0, help="seconds of GET /conversation/{id} per step"
    )
    parser.add_argument("--memory-only", action="store_true", help="only the idle memory, per --image")
    parser.add_argument("--image", action="append", help=f"sandbox image (repeatable; default {IMAGE})")
    arguments = parser.parse_args()
    if arguments.memory_only:
        run = memory_only(arguments.image or [IMAGE], arguments.runs)
    else:
        run = main(arguments.runs, arguments.cap, arguments.step, arguments.window)
    sys.exit(asyncio.run(interruptible(run)))
