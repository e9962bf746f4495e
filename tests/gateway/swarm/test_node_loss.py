"""A node cut off from the swarm takes only its own
conversations down (ERROR, naming the node), the others keep running commands, and
nothing of the lost ones is left once the node is back or removed.

A node is cut with the harness (``ip link set PREFIXvK down``: its engine keeps
running, unreachable); the manager marks it down after missed heartbeats, the
gateway's reconcile (every second here) turns its conversations ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from gw_helpers import Serve, create_ready

from scripts.swarm_cluster import Cluster, Node, cut, docker, node_id, restore
from tests.gateway.swarm.swarm_ops import (
    in_thread,
    node_volumes,
    rejoin,
    run_command,
    status_of,
    swarm_harness,
    traces,
)
from tests.gateway.swarm_cluster import node_of, swarm_settings
from tests.helpers import eventually

pytestmark = pytest.mark.swarm


async def _spread(client: httpx.AsyncClient, cluster: Cluster, install: str, count: int) -> dict[str, Node]:
    ids = await asyncio.gather(*(create_ready(client) for _ in range(count)))
    return {cid: await in_thread(node_of, cluster, install, UUID(cid)) for cid in ids}


def _victim(cluster: Cluster, placed: dict[str, Node]) -> Node:
    """A worker running some of the conversations (the manager stays: it is the control plane)."""
    used = {node.name for node in placed.values()}
    assert len(used) >= 2, f"the scheduler put every conversation on one node: {used}"
    return next(node for node in cluster.nodes[1:] if node.name in used)


class _Commands:
    """Runs commands in the surviving conversations until stopped; counts the successes."""

    def __init__(self, client: httpx.AsyncClient, conversation_ids: list[str]) -> None:
        self.runs = dict.fromkeys(conversation_ids, 0)
        self._client = client
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            for cid in self.runs:
                task = await run_command(self._client, cid, f"echo still-here-{cid}")
                assert task["status"] == "COMPLETED" and task["exit_code"] == 0, task
                self.runs[cid] += 1

    async def stop(self) -> dict[str, int]:
        if self._task.done():
            self._task.result()  # a failed command fails the test
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.runs


async def _lost_as_error(client: httpx.AsyncClient, lost: list[str], node: Node) -> None:
    """Every conversation of the cut node ends ERROR, its reason naming that node."""
    wanted_id = (await in_thread(node_id, node))[:12]

    async def all_error() -> bool:
        infos = [await status_of(client, cid) for cid in lost]
        for info in infos:
            assert info["status"] in ("READY", "ERROR"), info
        if any(info["status"] != "ERROR" for info in infos):
            return False
        for info in infos:
            assert node.ip in info["reason"] and wanted_id in info["reason"], info
        return True

    await eventually(all_error, within=60, what=f"conversations of {node.name} ERROR")


async def test_a_cut_off_node_ends_its_conversations_and_the_others_keep_working(
    swarm_cluster: Cluster, tmp_path: Path, serve: Serve
) -> None:
    settings = swarm_settings(swarm_cluster, tmp_path / "state", reconcile_interval=1.0)
    async with swarm_harness(settings, serve) as harness, harness.client() as client:
        placed = await _spread(client, swarm_cluster, settings.install, 3)
        victim = _victim(swarm_cluster, placed)
        lost = [cid for cid, node in placed.items() if node is victim]
        kept = [cid for cid in placed if cid not in lost]
        await in_thread(cut, swarm_cluster, victim.index)
        try:
            commands = _Commands(client, kept)
            await _lost_as_error(client, lost, victim)
            runs = await commands.stop()
            assert all(count >= 1 for count in runs.values()), runs
            assert [(await status_of(client, cid))["status"] for cid in kept] == ["READY"] * len(kept)
            # The swarm's part (services, configs, networks) goes while the node is still away.
            await eventually(lambda: _none(swarm_cluster, lost, []), what="swarm objects gone")
        finally:
            await in_thread(restore, swarm_cluster, victim.index)
        # Back: the node's engine drops the tasks the manager no longer has, volumes with them.
        await eventually(lambda: _nothing_left(swarm_cluster, lost, victim), within=60, what="node clean")
        for cid in kept:
            task = await run_command(client, cid, "echo after")
            assert task["exit_code"] == 0, task
        for cid in lost:  # an ERROR conversation can still be finished
            assert (await client.delete(f"/conversation/{cid}")).status_code in (204, 404)


async def _nothing_left(cluster: Cluster, lost: list[str], node: Node) -> bool:
    return not await in_thread(traces, cluster, lost) and not await in_thread(node_volumes, node)


async def test_a_lost_node_removed_from_the_swarm_leaves_nothing_of_its_conversations(
    swarm_cluster: Cluster, tmp_path: Path, serve: Serve
) -> None:
    settings = swarm_settings(swarm_cluster, tmp_path / "state", reconcile_interval=1.0)
    async with swarm_harness(settings, serve) as harness, harness.client() as client:
        placed = await _spread(client, swarm_cluster, settings.install, 3)
        victim = _victim(swarm_cluster, placed)
        lost = [cid for cid, node in placed.items() if node is victim]
        kept = [cid for cid in placed if cid not in lost]
        gone_id = await in_thread(node_id, victim)
        await in_thread(cut, swarm_cluster, victim.index)
        try:
            await _lost_as_error(client, lost, victim)
            await in_thread(docker, swarm_cluster.manager, "node", "rm", "--force", gone_id)
            others = [node for node in swarm_cluster.nodes if node is not victim]
            await eventually(lambda: _none(swarm_cluster, lost, others), what="nothing on the other nodes")
            for cid in kept:
                assert (await run_command(client, cid, "true"))["exit_code"] == 0
        finally:
            await in_thread(restore, swarm_cluster, victim.index)
            # The removed engine still runs the tasks it had (no manager tells it otherwise):
            # leaving the swarm drops their containers; their anonymous volumes and a network
            # still attached as it left are the operator's to prune (docs/swarm-operations.md).
            await in_thread(rejoin, swarm_cluster, victim)

        async def clean() -> bool:
            # The operator's prune, again until it holds: the rejoined engine may still be
            # letting go of a network one of the dropped containers was attached to.
            await in_thread(docker, victim, "network", "prune", "--force")
            return not await in_thread(traces, swarm_cluster, lost)

        await eventually(clean, within=60, what="nothing of the lost conversations once pruned")
        await in_thread(docker, victim, "volume", "prune", "--force")
        assert await in_thread(node_volumes, victim) == []
        assert gone_id not in await in_thread(docker, swarm_cluster.manager, "node", "ls", "-q")


async def _none(cluster: Cluster, lost: list[str], nodes: list[Node] | None) -> bool:
    return not await in_thread(traces, cluster, lost, nodes)
