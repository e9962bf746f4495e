"""The swarm harness itself: three engines, one swarm, the image on every node, reachable from here."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.swarm_cluster import Cluster, docker, leftovers, node_id
from tests.helpers import eventually

pytestmark = pytest.mark.swarm


def test_three_ready_nodes_each_with_the_image(swarm_cluster: Cluster) -> None:
    manager = swarm_cluster.manager
    listed = docker(manager, "node", "ls", "--format", "{{.ID}} {{.Status}} {{.ManagerStatus}}").splitlines()
    assert len(listed) == 3
    assert all(" Ready" in line for line in listed)
    assert sorted(line.split()[0] for line in listed) == sorted(node_id(n) for n in swarm_cluster.nodes)
    for node in swarm_cluster.nodes:
        assert docker(node, "image", "inspect", "--format", "{{.Id}}", swarm_cluster.images[0])
        labels = docker(manager, "node", "inspect", "--format", "{{json .Spec.Labels}}", node_id(node))
        assert node.name in labels


async def test_nothing_is_left_on_any_node(swarm_cluster: Cluster) -> None:
    """After whatever ran before on the session's cluster (each test removes what it made;
    the nodes' agents remove task containers, and their anonymous volumes, a moment later)."""

    async def clean() -> bool:
        return await asyncio.to_thread(leftovers, swarm_cluster) == {}

    await eventually(clean, what="no service, config, secret, container, volume or network left")
