"""The pool's figures on Docker, side by side in one run (medians of ``--runs``, 10 by default):

1. ``docker run`` of the sandbox image until its /health answers (the floor);
2. cold create -> READY: POST /conversation through a gateway with no pool, polled to READY;
3. warm create -> READY: the client's ``create()`` through a gateway whose pool has a spare
   (the pool is let refill between runs: the figure is that of a pool that keeps up);
4. warm create -> ``echo hi`` done: ``create()`` then ``run("echo hi")`` through the client;
5. where the time of (4) goes, step by step (scripts/bench_pool_steps.py): through the
   gateway as the client sees it, and straight to the agents with no gateway (with the
   agent's CPU time), side by side with the medians above.

Targets (ARCHITECTURE.md): warm create -> READY under 50 ms, create -> first command under
100 ms. Everything it starts carries an installation name of its own and is removed at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import docker_installation as installation
import httpx
from bench_pool_steps import Steps, command_steps, direct_steps, loaded
from benchtools import bench_arguments

from gateway.client import AsyncConvoyClient

POOL_SIZE = 2


async def pool_ready(client: httpx.AsyncClient, base: str, size: int, within: float = 300.0) -> None:
    """Waits until the pool holds ``size`` ready spares."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = (await client.get(f"{base}/pool")).json()
        if status["ready"] >= size and status["starting"] == 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the pool did not refill")


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await call()
    return time.perf_counter() - began


async def warm_runs(runs: int, client: httpx.AsyncClient) -> tuple[list[float], Steps, int]:
    """create -> READY of ``runs`` warm creates, the steps of ``runs`` more each followed by
    two ``echo hi`` (scripts/bench_pool_steps.py), and how many creates were served warm."""
    gateway = installation.Gateway(pool_size=POOL_SIZE)
    ready, steps, warm = [], Steps(), 0
    try:
        await gateway.start(client)
        async with AsyncConvoyClient(gateway.base, timeout=120) as convoy:
            for measure_command in [False] * runs + [True] * runs:
                await pool_ready(client, gateway.base, POOL_SIZE)
                began = time.perf_counter()
                handle = await convoy.create(title="bench")
                if measure_command:
                    await command_steps(handle, steps, began)
                else:
                    ready.append(time.perf_counter() - began)
                warm += handle.info.start == "warm"
                await handle.delete()
    finally:
        await gateway.stop()
    return ready, steps, warm


async def main(runs: int) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        try:
            print(f"image {installation.IMAGE}, install {installation.INSTALL}, pool size {POOL_SIZE}")
            await installation.floor_once(client)  # warm the page cache for every side
            floors, colds = [], []
            cold = installation.Gateway(pool_size=0)
            try:
                await cold.start(client)
                for _ in range(runs):
                    floors.append(await installation.floor_once(client))
                    conversation_id, took = await cold.create(client)
                    colds.append(took)
                    await client.delete(f"{cold.base}/conversation/{conversation_id}")
            finally:
                await cold.stop()
            ready, steps, warm = await warm_runs(runs, client)
            direct_wall, direct_cpu = await direct_steps(runs)
            floor = statistics.median(floors)
            first_command = steps.samples["create -> first echo done"]
            print(f"medians of {runs} ({loaded()}):")
            print(f"  docker run -> /health (floor)   {floor * 1000:7.1f} ms")
            for name, samples in (
                ("cold create -> READY", colds),
                ("warm create -> READY", ready),
                ("warm create -> `echo hi` done", first_command),
            ):
                median = statistics.median(samples)
                print(f"  {name:<32}{median * 1000:7.1f} ms   {median / floor:5.2f}x the floor")
            print(f"  served warm: {warm} of {2 * runs} creates")
            print("  warm create -> `echo hi` done, step by step:")
            print("   through the gateway, as the client sees it:")
            print("\n".join(steps.lines()))
            print("   straight to the agent, no gateway (the runtime in this process):")
            print("\n".join(direct_wall.lines()))
            print("\n".join(direct_cpu.lines()))
        finally:
            await installation.cleanup()


if __name__ == "__main__":
    parser = bench_arguments(__doc__, runs=10, runs_help="measurements of each figure (median)")
    asyncio.run(main(parser.parse_args().runs))
