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
import os
import signal
import statistics
import sys
import time
from collections.abc import Coroutine
from typing import Any

import httpx
from benchtools import bench_arguments
from docker_installation import IMAGE, INSTALL, Gateway, cleanup, floor_once
from docker_memory import MiB, engine_memory, host_available, idle_memory

from gateway.runtimes.docker import AiodockerEngine

#: The target: the gateway's p99 for GET /conversation/{id}, in seconds.
TARGET_P99 = 0.100


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
