"""Relay or no network: the Docker runtime's two designs side by side in one run (issue 15).

For each design (``docker_relayless`` false: a network and a relay container per conversation;
true: no network at all, the agent on a Unix socket), through a real gateway (``convoy serve``)
of its own, it prints:

1. idle memory per conversation as the engine reports it (sandbox + relay), median of ``--runs``;
2. the host's ``MemAvailable`` it costs per conversation (shims, fuse-overlayfs, docker-proxy
   included; noisy on a shared machine);
3. a small request (``GET agent-info``), p50 straight to the agent (the relay's published port,
   or the socket) and through the gateway, interleaved; their ratio (target <= 1.5x);
4. DELETE /conversation/{id} (answered once the sandbox is stopped), median, and the time until
   the engine holds nothing of it (relay, volume, network, socket directory), median.

Everything it starts carries an installation name of its own and is removed at the end.
The machine's load drifts: the designs alternate, each first in every other round (``--rounds``).
Run: ``scripts/bench relayless`` (or ``python scripts/bench_relayless.py [--runs N] [--requests N]``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID

import docker_installation as installation
import httpx
from benchtools import bench_arguments
from docker_installation import Gateway
from docker_installation import cleanup as docker_cleanup
from docker_memory import MiB, host_available, memory

from gateway.agent_transport import AgentTransport
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker import AiodockerEngine
from gateway.runtimes.docker_labels import Names
from gateway.runtimes.docker_token import TOKEN_FILE
from sandbox_agent.protocol import TOKEN_HEADER


async def conversation_memory(engine: AiodockerEngine, names: Names) -> tuple[float, float]:
    """(sandbox, relay) bytes as the engine charges them; relay 0 when there is none."""
    sandbox = memory(await engine.stats(names.sandbox))
    relay = memory(await engine.stats(names.relay)) if await engine.inspect(names.relay) else 0.0
    return sandbox, relay


async def agent_address(engine: AiodockerEngine, gateway: Gateway, names: Names) -> tuple[str, str]:
    """The agent's base_url as the runtime reads it back, and its token (read through the engine)."""
    from gateway.runtimes.docker import DockerRuntime  # the runtime's own reading of the labels
    from gateway.settings import Settings

    settings = Settings(
        install=installation.INSTALL,
        docker_image=gateway.image,
        docker_reach="published",
        docker_socket_dir=Path(os.environ["CONVOY_DOCKER_SOCKET_DIR"]),
    )
    runtime = await DockerRuntime.connect(settings)
    try:
        conversation = names.sandbox.removeprefix(f"convoy-{installation.INSTALL}-")
        handle = next(h for h in await runtime.list() if str(h.conversation_id) == conversation)
    finally:
        await runtime.close()
    token = (await engine.read_file(names.sandbox, TOKEN_FILE) or b"").decode().strip()
    return handle.base_url, token


async def small_requests(direct: str, token: str, through: str, count: int) -> tuple[float, float]:
    """p50 (ms) of GET agent-info straight and through the gateway, interleaved."""
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    async with httpx.AsyncClient(transport=AgentTransport(), timeout=30) as client:
        for _ in range(20):  # warm both connections
            await client.get(f"{direct}/agent-info", headers={TOKEN_HEADER: token})
            await client.get(f"{through}/agent-info")
        for _ in range(count):
            for side, url, headers in (
                ("direct", f"{direct}/agent-info", {TOKEN_HEADER: token}),
                ("gateway", f"{through}/agent-info", {}),
            ):
                began = time.perf_counter()
                (await client.get(url, headers=headers)).raise_for_status()
                times[side].append(time.perf_counter() - began)
    return statistics.median(times["direct"]) * 1000, statistics.median(times["gateway"]) * 1000


async def gone(engine: AiodockerEngine, names: Names, socket_dir: Path) -> None:
    """Until the engine holds nothing of the conversation (and its socket directory is gone)."""
    conversation = names.sandbox.removeprefix(f"convoy-{installation.INSTALL}-")
    while True:
        label = {"label": [f"{cfg.CONVERSATION_ID}={conversation}"]}
        left = await engine.containers(label) + await engine.volumes(label) + await engine.networks(label)
        directory = socket_dir / installation.INSTALL / conversation
        if not left and not await asyncio.to_thread(directory.exists):
            return
        await asyncio.sleep(0.01)


async def design(relayless: bool, runs: int, requests: int, engine: AiodockerEngine) -> None:
    os.environ["CONVOY_DOCKER_RELAYLESS"] = "true" if relayless else "false"
    socket_dir = Path(os.environ["CONVOY_DOCKER_SOCKET_DIR"])
    name = "no network (socket)" if relayless else "relay + network"
    gateway = Gateway()
    async with httpx.AsyncClient(timeout=120) as client:
        await gateway.start(client)
        try:
            before = host_available()
            ids = [(await gateway.create(client))[0] for _ in range(runs)]
            await asyncio.sleep(8)  # let the agents settle to idle
            host_mib = (before - host_available()) / runs / MiB
            charged = [
                await conversation_memory(engine, Names.of(installation.INSTALL, UUID(i))) for i in ids
            ]
            sandbox = statistics.median(s for s, _ in charged) / MiB
            relay = statistics.median(r for _, r in charged) / MiB
            names = Names.of(installation.INSTALL, UUID(ids[0]))
            direct, token = await agent_address(engine, gateway, names)
            p50_direct, p50_gateway = await small_requests(
                direct, token, f"{gateway.base}/conversation/{ids[0]}", requests
            )
            deletes, teardowns = [], []
            for conversation_id in ids:
                began = time.monotonic()
                (await client.delete(f"{gateway.base}/conversation/{conversation_id}")).raise_for_status()
                deletes.append(time.monotonic() - began)
                await gone(engine, Names.of(installation.INSTALL, UUID(conversation_id)), socket_dir)
                teardowns.append(time.monotonic() - began)
        finally:
            await gateway.stop()
    print(f"{name}:")
    print(f"  idle memory (engine), median of {runs}: sandbox {sandbox:5.1f} MiB + relay {relay:4.1f} MiB"
          f" = {sandbox + relay:5.1f} MiB per conversation")  # fmt: skip
    print(f"  host MemAvailable per conversation:     {host_mib:5.1f} MiB (noisy)")
    print(f"  small request p50: direct {p50_direct:5.2f} ms, gateway {p50_gateway:5.2f} ms,"
          f" ratio {p50_gateway / p50_direct:4.2f}x (target <= 1.5x)")  # fmt: skip
    print(f"  DELETE median {statistics.median(deletes) * 1000:6.0f} ms; nothing left after"
          f" {statistics.median(teardowns) * 1000:6.0f} ms (median)")  # fmt: skip


async def main(runs: int, requests: int, rounds: int) -> None:
    load = (await asyncio.to_thread(Path("/proc/loadavg").read_text)).split()[:3]
    print(f"image {installation.IMAGE}, install {installation.INSTALL}, {os.cpu_count()} cores, load {load}")
    engine = await AiodockerEngine.open(None)
    with tempfile.TemporaryDirectory(prefix="cvb-") as sockets:
        os.environ["CONVOY_DOCKER_SOCKET_DIR"] = sockets
        try:
            # ABBA...: the machine's load drifts; each design goes first in every other round.
            for round_ in range(rounds):
                for relayless in (False, True) if round_ % 2 == 0 else (True, False):
                    await design(relayless, runs, requests, engine)
        finally:
            await engine.close()
            await docker_cleanup()
    print(f"load after: {(await asyncio.to_thread(Path('/proc/loadavg').read_text)).split()[:3]}")


if __name__ == "__main__":
    parser = bench_arguments(__doc__, runs=5, runs_help="conversations per design")
    parser.add_argument("--requests", type=int, default=300, help="small requests per side")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both designs, alternating first")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.runs, arguments.requests, arguments.rounds)))
