"""Two gateways on the swarm, deployed with ``deploy/swarm/convoy-stack.yml``, behind one
address (the stack's balancer): both serve every conversation on any route, one killed
with SIGKILL loses nothing, and the limits hold across both under concurrent creates.

Everything goes through HTTP: the balancer's address, and each gateway's own
host-mode port (to show which gateway answers). The stack and every conversation of
its installation are removed at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.runtimes.swarm import SwarmRuntime
from gateway.settings import Settings
from scripts.swarm_cluster import Cluster, docker
from tests.gateway.swarm.stack import Stack, deployed, gateway_container, wait_serving
from tests.gateway.swarm.swarm_ops import in_thread, traces
from tests.helpers import eventually

pytestmark = pytest.mark.swarm
GATEWAYS = ("gateway-a", "gateway-b")


@pytest.fixture(scope="module")
def stack(swarm_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with deployed(swarm_cluster, max_conversations_per_user="2") as made:
        try:
            yield made
        finally:
            asyncio.run(_remove_all(swarm_cluster, made, tmp_path_factory.mktemp("stack")))


async def _remove_all(cluster: Cluster, stack: Stack, state: Path) -> None:
    """Every conversation of the stack's installation, from the host (after the gateways)."""
    settings = Settings(
        install=stack.install,
        runtime="swarm",
        docker_url=cluster.manager.host,
        docker_image=cluster.images[0],
        swarm_reach="published",
        state_dir=state,
    )
    runtime = await SwarmRuntime.connect(settings)
    runtime.orphan_age = 0.0
    try:
        handles = await runtime.list()
        for handle in handles:
            await runtime.remove(handle.conversation_id)
        await runtime.cleanup_orphans()
    finally:
        await runtime.close()
    ids = [str(handle.conversation_id) for handle in handles]
    await eventually(lambda: _clean(cluster, ids), what="nothing of the stack's conversations")


async def _clean(cluster: Cluster, ids: list[str]) -> bool:
    return not await in_thread(traces, cluster, ids)


async def _create(client: httpx.AsyncClient, stack: Stack, principal: str | None = None) -> httpx.Response:
    return await client.post("/conversation", json={}, headers=stack.headers(principal))


async def _ready(client: httpx.AsyncClient, stack: Stack, cid: str) -> dict[str, Any] | None:
    response = await client.get(f"/conversation/{cid}", headers=stack.headers())
    if response.status_code != 200:
        return None
    info = dict(response.json())
    assert info["status"] in ("STARTING", "READY"), info
    return info if info["status"] == "READY" else None


async def _command(client: httpx.AsyncClient, stack: Stack, cid: str, word: str) -> None:
    """``echo word`` in the conversation through ``client``'s gateway, to completion."""
    posted = await client.post(
        f"/conversation/{cid}/task",
        json={"runnable": {"type": "Shell", "command": f"echo {word}"}},
        headers=stack.headers(),
    )
    assert posted.status_code == 201, posted.text
    task_id = posted.json()["id"]

    async def done() -> bool:
        task = (await client.get(f"/conversation/{cid}/task/{task_id}", headers=stack.headers())).json()
        assert task["status"] in ("PENDING", "RUNNING", "COMPLETED"), task
        return bool(task["status"] == "COMPLETED" and task["exit_code"] == 0)

    await eventually(done, what=f"echo {word} in {cid}")


async def _listed(client: httpx.AsyncClient, stack: Stack) -> set[str]:
    page = (await client.get("/conversation", params={"limit": 100}, headers=stack.headers())).json()
    return {item["id"] for item in page["results"]}


def _clients(stack: Stack) -> dict[str, httpx.AsyncClient]:
    return {name: httpx.AsyncClient(base_url=stack.url(name), timeout=60) for name in ("balancer", *GATEWAYS)}


async def test_both_gateways_serve_every_conversation_and_one_killed_loses_nothing(
    swarm_cluster: Cluster, stack: Stack
) -> None:
    clients = _clients(stack)
    try:
        front = clients["balancer"]
        # Two: the stack's per-principal limit (2, for the limits test) holds for the admin too.
        created = await asyncio.gather(*(_create(front, stack) for _ in range(2)))
        assert [r.status_code for r in created] == [201] * 2, [r.text for r in created]
        ids = [r.json()["id"] for r in created]
        for cid in ids:
            await eventually(lambda cid=cid: _ready(front, stack, cid), what=f"{cid} READY")
        # Any gateway, any route: each one knows, follows and runs commands in every conversation.
        for name in GATEWAYS:
            await eventually(lambda name=name: _knows(clients[name], stack, ids), what=f"{name} knows all")
            for cid in ids:
                await _command(clients[name], stack, cid, f"from-{name}")
        # SIGKILL one gateway's container: the other and the one address keep serving all of it.
        victim = await in_thread(gateway_container, swarm_cluster, stack, "gateway-a")
        await in_thread(docker, swarm_cluster.manager, "kill", "-s", "KILL", victim)
        for cid in ids:
            await _command(front, stack, cid, "after-the-kill")
            await _command(clients["gateway-b"], stack, cid, "on-b")
        assert set(ids) <= await _listed(front, stack)
        # The swarm starts the killed one again; it serves the same conversations.
        await in_thread(wait_serving, stack, ("gateway-a",))
        await eventually(
            lambda: _knows(clients["gateway-a"], stack, ids), what="restarted gateway-a knows all"
        )
        assert await in_thread(gateway_container, swarm_cluster, stack, "gateway-a") != victim
        for cid in ids:
            await _command(clients["gateway-a"], stack, cid, "back")
        for cid in ids:
            assert (await front.delete(f"/conversation/{cid}", headers=stack.headers())).status_code == 204
        await eventually(
            lambda: _clean(swarm_cluster, ids), what="deleted conversations gone from every node"
        )
    finally:
        for client in clients.values():
            await client.aclose()


async def _knows(client: httpx.AsyncClient, stack: Stack, ids: list[str]) -> bool:
    try:
        return all([await _ready(client, stack, cid) for cid in ids])
    except httpx.HTTPError:
        return False


_CROSS_GATEWAY_LIMITS = "sync_interval" in Settings.model_fields


@pytest.mark.xfail(
    not _CROSS_GATEWAY_LIMITS,
    strict=True,
    reason="limits across gateways come with the several-gateways work (branch gateways): "
    "without it each gateway counts only what it has seen",
)
async def test_limits_hold_across_both_gateways_under_concurrent_creates(
    swarm_cluster: Cluster, stack: Stack
) -> None:
    clients = _clients(stack)
    try:
        front = clients["balancer"]
        # Six creates at once for bob (max 2 per user), spread over both gateways.
        targets = [clients[GATEWAYS[n % 2]] for n in range(6)]
        answers = await asyncio.gather(*(_create(client, stack, "bob") for client in targets))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {201, 429}, [r.text for r in answers]
        assert codes.count(201) <= 2, codes
        made = [r.json()["id"] for r in answers if r.status_code == 201]

        async def bobs() -> list[str]:
            page = (await front.get("/conversation", params={"limit": 100}, headers=stack.headers())).json()
            return [c["id"] for c in page["results"] if c.get("owner") == "bob"]

        await asyncio.sleep(2)  # one sync interval and more: both gateways have listed everything
        assert len(await bobs()) <= 2
        assert set(await bobs()) <= set(made)
        for cid in made:
            await front.delete(f"/conversation/{cid}", headers=stack.headers())
    finally:
        for client in clients.values():
            await client.aclose()


async def test_a_pause_and_a_snapshot_through_one_gateway_are_the_other_gateways_too(stack: Stack) -> None:
    """PAUSED is the swarm's (a config), snapshots are in the store both gateways share."""
    clients = _clients(stack)
    a, b = clients["gateway-a"], clients["gateway-b"]
    headers = stack.headers()
    try:
        cid = (await _create(a, stack)).json()["id"]
        await eventually(lambda: _ready(a, stack, cid), what="READY")
        written = await a.post(
            f"/conversation/{cid}/task",
            json={"runnable": {"type": "Shell", "command": "printf kept > note.txt"}},
            headers=headers,
        )
        assert written.status_code == 201, written.text
        await _command(a, stack, cid, "done")
        assert (await a.post(f"/conversation/{cid}/pause", headers=headers)).json()["status"] == "PAUSED"

        async def paused_for_b() -> bool:
            return (await b.get(f"/conversation/{cid}", headers=headers)).json()["status"] == "PAUSED"

        await eventually(paused_for_b, what="gateway-b sees it PAUSED")
        await _command(b, stack, cid, "resumed")  # any request resumes it, through either gateway
        snap = await a.post(f"/conversation/{cid}/snapshot", json={"name": "shared"}, headers=headers)
        assert snap.status_code == 201, snap.text
        snapshot_id = snap.json()["id"]
        listed = (await b.get("/snapshot", headers=headers)).json()["results"]
        assert [s["id"] for s in listed] == [snapshot_id]
        started = await b.post("/conversation", json={"snapshot": snapshot_id}, headers=headers)
        assert started.status_code == 201, started.text
        again = started.json()["id"]
        await eventually(lambda: _ready(b, stack, again), what="READY from the snapshot")
        content = await b.get(f"/conversation/{again}/file-content/note.txt", headers=headers)
        assert content.status_code == 200 and content.content == b"kept"
        for conversation in (cid, again):
            assert (await b.delete(f"/conversation/{conversation}", headers=headers)).status_code == 204
        assert (await a.delete(f"/snapshot/{snapshot_id}", headers=headers)).status_code == 204
        assert (await b.get("/snapshot", headers=headers)).json()["results"] == []
    finally:
        for client in clients.values():
            await client.aclose()
