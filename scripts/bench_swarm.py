"""The swarm runtime's figures on a real swarm of this machine, 1 node then 3, in one run.

For each size (the other nodes drained, so the scheduler places on the active ones only):

1. cold create -> READY: POST /conversation through a gateway with no pool, polled to READY,
   one at a time (median of ``--runs``);
2. warm create -> READY: the same through a gateway whose pool holds a spare (let refill
   between runs: the figure of a pool that keeps up);
3. a burst: ``--burst`` cold creates at once, the time until all are READY (how the
   cluster's capacity grows with its nodes).

The cluster is the harness's (``scripts/swarm-cluster``, prefix ``--prefix``, default
``cvb``: a cluster of its own, built if missing and removed at the end unless
``--keep``). The gateway runs on this host (``convoy serve --runtime swarm``) and
reaches relays by their host-mode ports. On these 2 shared cores every node is the same
machine: more nodes spread the tasks, not the CPU; absolute figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import sys
import time
from pathlib import Path

import httpx
from bench_pool import pool_ready
from benchtools import bench_arguments, free_port

from scripts.swarm_cluster import Cluster, default_images, docker, down, node_id, up

INSTALL = f"bench-{secrets.token_hex(4)}"


class Gateway:
    """``convoy serve --runtime swarm`` on this host against the cluster's manager."""

    def __init__(self, cluster: Cluster, pool_size: int) -> None:
        self.cluster, self.pool_size = cluster, pool_size
        self.base = f"http://127.0.0.1:{free_port()}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, client: httpx.AsyncClient) -> None:
        env = os.environ | {
            "CONVOY_INSTALL": INSTALL,
            "DOCKER_HOST": self.cluster.manager.host,
            "CONVOY_DOCKER_IMAGE": self.cluster.images[0],
            "CONVOY_SWARM_REACH": "published",
            "CONVOY_MAX_CONVERSATIONS": "1000",
            "CONVOY_MAX_CONVERSATIONS_PER_USER": "1000",
            "CONVOY_CREATE_BURST": "1000",
            "CONVOY_START_TIMEOUT": "300",
            "CONVOY_POOL_SIZE": str(self.pool_size),
        }
        convoy = Path(sys.executable).with_name("convoy")
        port = self.base.rpartition(":")[2]
        self.process = await asyncio.create_subprocess_exec(
            str(convoy), "serve", "--runtime", "swarm", "--port", port,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 300  # imports alone take 20 s on a loaded 2-core machine
        while True:
            try:
                if (await client.get(f"{self.base}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not answer /health")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 90)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def create(self, client: httpx.AsyncClient) -> tuple[str, float]:
        """One create, polled to READY: (its id, seconds)."""
        began = time.perf_counter()
        response = await client.post(f"{self.base}/conversation", json={"title": "bench"})
        response.raise_for_status()
        conversation_id = str(response.json()["id"])
        while True:
            state = (await client.get(f"{self.base}/conversation/{conversation_id}")).json()
            if state["status"] == "READY":
                return conversation_id, time.perf_counter() - began
            if state["status"] == "ERROR":
                raise RuntimeError(f"create failed: {state.get('reason')}")
            await asyncio.sleep(0.02)

    async def delete(self, client: httpx.AsyncClient, ids: list[str]) -> None:
        await asyncio.gather(*(client.delete(f"{self.base}/conversation/{cid}") for cid in ids))


def use_nodes(cluster: Cluster, count: int) -> None:
    """Only the first ``count`` nodes take tasks; the others are drained."""
    for node in cluster.nodes:
        availability = "active" if node.index <= count else "drain"
        docker(cluster.manager, "node", "update", "--availability", availability, node_id(node))


async def figures(cluster: Cluster, client: httpx.AsyncClient, runs: int, burst: int) -> dict[str, float]:
    cold, warm = Gateway(cluster, 0), Gateway(cluster, 1)
    found: dict[str, float] = {}
    try:
        await cold.start(client)
        await cold.create(client)  # the first start on a node pays for its page cache
        samples = []
        for _ in range(runs):
            conversation_id, took = await cold.create(client)
            samples.append(took)
            await cold.delete(client, [conversation_id])
        found["cold"] = statistics.median(samples)
        began = time.perf_counter()
        made = await asyncio.gather(*(cold.create(client) for _ in range(burst)))
        found["burst"] = time.perf_counter() - began
        await cold.delete(client, [cid for cid, _ in made])
    finally:
        await cold.stop()
    try:
        await warm.start(client)
        samples = []
        for _ in range(runs):
            await pool_ready(client, warm.base, 1)
            conversation_id, took = await warm.create(client)
            samples.append(took)
            await warm.delete(client, [conversation_id])
        found["warm"] = statistics.median(samples)
    finally:
        await warm.stop()
    return found


async def cleanup(cluster: Cluster) -> None:
    """Whatever of this run is left in the swarm (a gateway leaves conversations running)."""
    label = f"label=convoy.install={INSTALL}"
    for _ in range(20):  # a network is refused while a task on it still shuts down
        left = 0
        for kind in ("service", "config", "network"):
            names = docker(cluster.manager, kind, "ls", "-q", "--filter", label, check=False).split()
            if names:
                left += len(names)
                docker(cluster.manager, kind, "rm", *names, check=False)
        if not left:
            return
        await asyncio.sleep(1)


async def main(args: argparse.Namespace) -> None:
    cluster = Cluster.named(args.prefix, 3, images=default_images()[:1])
    print(f"building/using the swarm {args.prefix} (3 nodes) ...", flush=True)
    await asyncio.to_thread(up, cluster)
    results: dict[int, dict[str, float]] = {}
    try:
        async with httpx.AsyncClient(timeout=300) as client:
            for count in (1, 3):
                await asyncio.to_thread(use_nodes, cluster, count)
                print(f"measuring on {count} node(s) ...", flush=True)
                results[count] = await figures(cluster, client, args.runs, args.burst)
                await cleanup(cluster)
    finally:
        await cleanup(cluster)
        await asyncio.to_thread(use_nodes, cluster, 3)
        if not args.keep:
            await asyncio.to_thread(down, cluster)
    print(f"\nswarm runtime, image {cluster.images[0]}, medians of {args.runs} (seconds)")
    burst = f"{args.burst} cold at once"
    print(f"{'nodes':>5}  {'cold create->READY':>19}  {'warm create->READY':>19}  {burst:>16}")
    for count, found in results.items():
        print(f"{count:>5}  {found['cold']:>19.3f}  {found['warm']:>19.3f}  {found['burst']:>16.3f}")
    if 1 in results and 3 in results:
        print(f"burst 1 -> 3 nodes: {results[1]['burst'] / results[3]['burst']:.2f}x faster")


if __name__ == "__main__":
    parser = bench_arguments(__doc__, runs=10, runs_help="measurements of each figure (median)")
    parser.add_argument("--burst", type=int, default=6, help="cold creates at once")
    parser.add_argument("--prefix", default="cvb", help="the harness cluster's prefix (its own by default)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up at the end")
    asyncio.run(main(parser.parse_args()))
