"""Helpers of the swarm operations tests: a gateway on the session's cluster, where a
conversation runs, commands through the gateway, and what a conversation left behind.

Everything here reads the cluster through the harness (:mod:`scripts.swarm_cluster`)
and the gateway through its HTTP routes; nothing reaches into the runtime.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from gw_helpers import Harness, Serve

from gateway.runtimes.swarm import SwarmRuntime
from gateway.runtimes.swarm_config import Names
from gateway.settings import Settings
from scripts.swarm_cluster import Cluster, Node, docker, node_id, up
from tests.helpers import eventually


def ops_settings(cluster: Cluster, state_dir: Path, **overrides: Any) -> Settings:
    """A gateway of an installation of its own on the cluster's manager, reaching relays by
    their host-mode ports (the test runs on the host, outside the cluster)."""
    values: dict[str, Any] = {
        "install": f"ops-{uuid.uuid4().hex[:8]}",
        "runtime": "swarm",
        "docker_url": cluster.manager.host,
        "docker_image": cluster.images[0],
        "swarm_reach": "published",
        "start_timeout": 120.0,
        "state_dir": state_dir,
        "pool_size": 0,
        "reconcile_interval": 1.0,  # the node-loss tests wait for reconcile
    }
    return Settings(**(values | overrides))


@asynccontextmanager
async def swarm_harness(settings: Settings, serve: Serve) -> AsyncIterator[Harness]:
    """A :class:`Harness` on the swarm runtime; on the way out every sandbox of the
    installation is removed (also after a failed test)."""
    runtime = await SwarmRuntime.connect(settings)
    runtime.orphan_age = 5.0  # nothing of this installation starts behind the test's back
    try:
        yield Harness(settings, runtime, serve)
    finally:
        for handle in await runtime.list():
            await runtime.remove(handle.conversation_id)
        await runtime.cleanup_orphans()
        await runtime.close()


def node_of(cluster: Cluster, install: str, conversation_id: UUID | str) -> Node:
    """The harness node the conversation's sandbox task was placed on."""
    service = Names.of(install, UUID(str(conversation_id))).sandbox
    task = docker(cluster.manager, "service", "ps", "-q", "--no-trunc", service).split()[0]
    wanted = docker(cluster.manager, "inspect", "--format", "{{.NodeID}}", task)
    return next(node for node in cluster.nodes if node_id(node) == wanted)


async def run_command(client: httpx.AsyncClient, conversation_id: str, command: str) -> dict[str, Any]:
    """Runs ``command`` in the conversation through the gateway; the finished task."""
    posted = await client.post(
        f"/conversation/{conversation_id}/task", json={"runnable": {"type": "Shell", "command": command}}
    )
    assert posted.status_code == 201, posted.text
    task_id = posted.json()["id"]

    async def finished() -> dict[str, Any] | None:
        task = (await client.get(f"/conversation/{conversation_id}/task/{task_id}")).json()
        return task if task["status"] in ("COMPLETED", "CANCELLED", "ERROR") else None

    return await eventually(finished, what=f"task {command!r} in {conversation_id}")


async def status_of(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/conversation/{conversation_id}")).json())


def traces(cluster: Cluster, conversation_ids: list[str], nodes: list[Node] | None = None) -> list[str]:
    """Whatever the swarm (services, configs, networks) or any of ``nodes`` (default: all;
    containers, volumes, networks) still holds of the conversations: ``[]`` when nothing.
    A task's anonymous volume has no name of ours: a node's volumes count when it holds
    a container of them or when it should hold nothing at all (``conversation_ids`` are
    then the node's only users)."""
    marks = [UUID(str(c)).hex for c in conversation_ids]
    found = [
        f"{kind} {name}"
        for kind in ("service", "config", "network")
        for name in docker(cluster.manager, kind, "ls", "--format", "{{.Name}}", check=False).split()
        if any(mark in name for mark in marks)
    ]
    for node in cluster.nodes if nodes is None else nodes:
        for kind, listing in (
            ("container", ("ps", "-a", "--format", "{{.Names}}")),
            ("network", ("network", "ls", "--format", "{{.Name}}")),
        ):
            names = docker(node, *listing, check=False).split()
            found += [f"{node.name}: {kind} {name}" for name in names if any(mark in name for mark in marks)]
    return found


def node_volumes(node: Node) -> list[str]:
    return docker(node, "volume", "ls", "-q", check=False).split()


def rejoin(cluster: Cluster, node: Node) -> None:
    """Puts a node that was removed from the swarm back (``swarm leave --force`` on its engine,
    then the harness's idempotent ``up``: join, labels, images)."""
    docker(node, "swarm", "leave", "--force", check=False, timeout=60)
    up(cluster)


async def in_thread(function: Any, *args: Any) -> Any:
    """A blocking harness call, off the event loop."""
    return await asyncio.to_thread(function, *args)
