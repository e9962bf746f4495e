"""Commands and teardown on Docker, through the Python client, side by side in one run:

1. create -> READY as ``client.create()`` sees it (it follows the conversation's WebSocket)
   vs polling ``GET /conversation/{id}`` every 10 ms;
2. a warm ``echo hi`` in an existing sandbox: ``run()`` (one request, ``?wait=true``) vs
   the three round trips it made before (POST the task, GET its first event, follow over a
   WebSocket) vs ``docker exec`` of the same command in the same container;
3. DELETE /conversation/{id}, median: answered once the sandbox is stopped; then how long
   until its relay, containers, volume and network are gone (removed in the background).

Targets (issue 15): warm ``echo hi`` under 5 ms at the median; DELETE under 300 ms.
Everything it starts carries an installation name of its own and is removed at the end.
Run: ``scripts/bench docker`` (or this file; ``--runs N``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import httpx
from benchtools import bench_arguments
from docker_installation import IMAGE, INSTALL, Gateway, cleanup, sh

from gateway.client import AsyncConversationHandle, AsyncConvoyClient, shell
from gateway.runtimes import docker_config as cfg


async def timed(call: Callable[[], Awaitable[Any]], runs: int, warm: int = 3) -> list[float]:
    for _ in range(warm):
        await call()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        times.append(time.perf_counter() - began)
    return times


def row(name: str, times: list[float], target: str = "") -> str:
    median, p90 = statistics.median(times), statistics.quantiles(times, n=10)[-1]
    return f"  {name:<52}{median * 1000:8.1f} ms  (p90 {p90 * 1000:6.1f})  {target}"


async def three_round_trips(convo: AsyncConversationHandle) -> None:
    """``run()`` as it was: POST the task, then follow its events over a WebSocket."""
    result = await (await convo.start(shell("echo hi"))).wait()
    assert result.stdout == "hi\n", result


async def one_round_trip(convo: AsyncConversationHandle) -> None:
    result = await convo.run("echo hi")
    assert result.stdout == "hi\n", result


async def leftovers() -> int:
    """Containers, volumes and networks of this run still there."""
    label = f"label=convoy.install={INSTALL}"
    kinds = (["ps", "-a"], ["volume", "ls"], ["network", "ls"])
    found = [await sh("docker", *kind, "-q", "--filter", label) for kind in kinds]
    return sum(len(each.split()) for each in found)


async def main(runs: int, deletes: int) -> None:
    gateway = Gateway(IMAGE)
    async with httpx.AsyncClient(timeout=120) as http:
        try:
            print(f"image {IMAGE}, install {INSTALL}")
            await gateway.start(http)
            async with AsyncConvoyClient(gateway.base, timeout=120) as client:
                followed, polled = [], []
                for _ in range(max(3, deletes // 2)):
                    began = time.perf_counter()
                    convo = await client.create(title="bench")
                    followed.append(time.perf_counter() - began)
                    await convo.delete()
                    conversation_id, took = await gateway.create(http)
                    polled.append(took)
                    await client.delete(conversation_id)
                print("create -> READY (cold), median:")
                print(row("client.create() (follows the WebSocket)", followed))
                print(row("POST + GET every 10 ms", polled))

                convo = await client.create(title="bench")
                container = cfg.Names.of(INSTALL, UUID(str(convo.id))).sandbox
                print(f"warm `echo hi` in an existing sandbox, {runs} runs:")
                print(
                    row(
                        "run(): one request (?wait=true)",
                        await timed(lambda: one_round_trip(convo), runs),
                        "< 5 ms",
                    )
                )
                print(
                    row(
                        "start() + wait(): three round trips (before)",
                        await timed(lambda: three_round_trips(convo), runs),
                    )
                )
                exec_runs = max(5, runs // 5)
                print(
                    row(
                        "docker exec (no agent)",
                        await timed(lambda: sh("docker", "exec", container, "echo", "hi"), exec_runs),
                    )
                )
                await convo.delete()

                made = [await client.create(title="bench") for _ in range(deletes)]
                await asyncio.sleep(2)  # idle, as a conversation usually is when it ends
                times = []
                for each in made:
                    began = time.perf_counter()
                    await each.delete()
                    times.append(time.perf_counter() - began)
                print(f"DELETE /conversation/{{id}}, {deletes} conversations:")
                print(row("answered (the sandbox stopped)", times, "< 300 ms"))
                # The relay, containers, volume and network go in the background, right after.
                after = time.perf_counter()
                for _ in range(1200):  # 60 s at most
                    if not await leftovers():
                        break
                    await asyncio.sleep(0.05)
                gone = time.perf_counter() - after
                print(f"  then everything gone {gone:.2f} s after the last answer ({await leftovers()} left)")
        finally:
            await gateway.stop()
            await cleanup()


if __name__ == "__main__":
    parser = bench_arguments(__doc__, runs=50, runs_help="warm commands measured each way")
    parser.add_argument(
        "--deletes", type=int, default=10, help="conversations created, then deleted one by one"
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.deletes))
