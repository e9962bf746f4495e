"""Helpers of the swarm operations tests: a gateway on the session's cluster, commands
through it, what a conversation left behind, a removed node put back.

Everything here reads the cluster through the harness (:mod:`scripts.swarm_cluster`)
and the gateway through its HTTP routes; nothing reaches into the runtime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import httpx
from gw_helpers import Harness, Serve

from gateway.runtimes.swarm import SwarmRuntime
from gateway.settings import Settings
from scripts.swarm_cluster import Cluster, Node, docker, up
from tests.helpers import eventually


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
    """Puts a node that was removed from the swarm back, as an operator would
    (docs/swarm-operations.md): ``swarm leave --force`` on its engine, which drops the
    containers of the tasks it still ran; once they are gone, ``network prune`` (a network
    such a container was still attached to when the engine left stays behind as a local
    one); then the harness's idempotent ``up`` (join, labels, images)."""
    docker(node, "swarm", "leave", "--force", check=False, timeout=60)
    deadline = time.monotonic() + 60
    while docker(node, "ps", "-aq", check=False).split() and time.monotonic() < deadline:
        time.sleep(0.5)
    docker(node, "network", "prune", "--force", check=False, timeout=60)
    up(cluster)


async def in_thread(function: Any, *args: Any) -> Any:
    """A blocking harness call, off the event loop."""
    return await asyncio.to_thread(function, *args)
