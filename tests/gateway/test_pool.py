"""The pool (gateway/pool.py) above the seam, on the memory and process runtimes: warm creates
are READY in their 201 and start their log clean, a claimed sandbox never returns, spares are
no conversations, GET /pool tells the truth, shutdown removes spares, limits are the same."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest
from gw_helpers import (
    ADMIN_KEY,
    USER_KEYS,
    Harness,
    auth,
    is_status,
    keyed,
    recv_json,
    recv_until,
    task_finished,
    ws_connect,
)
from pydantic import ValidationError

from gateway.runtimes.base import SandboxState
from gateway.settings import Settings
from tests.helpers import eventually

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]


async def pool_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/pool", headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def full(client: httpx.AsyncClient, size: int) -> dict[str, Any]:
    """The pool status once ``size`` spares are ready (and none starting)."""

    async def check() -> dict[str, Any] | None:
        status = await pool_of(client)
        return status if status["ready"] == size and status["starting"] == 0 else None

    return await eventually(check, what=f"{size} spares ready")


async def spares(harness: Harness) -> list[str]:
    return [str(h.conversation_id) for h in await harness.runtime.list() if h.spec.pool is not None]


async def run_shell(client: httpx.AsyncClient, cid: str, key: str, script: str) -> str:
    """Runs ``script`` in conversation ``cid``; its stdout once it finished."""
    created = await client.post(
        f"/conversation/{cid}/task",
        json={"runnable": {"type": "Shell", "command": script}, "title": "sh"},
        headers=auth(key),
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    async def done() -> dict[str, Any] | None:
        task = (await client.get(f"/conversation/{cid}/task/{task_id}", headers=auth(key))).json()
        return task if task["status"] in ("COMPLETED", "ERROR") else None

    await eventually(done)
    events = (await client.get(f"/conversation/{cid}/event?limit=100", headers=auth(key))).json()["results"]
    return "".join(e["detail"].get("data", "") for e in events if e["detail"].get("task_id") == task_id)


async def test_a_warm_create_is_ready_in_its_201_and_its_log_starts_with_its_ready(harness: Harness) -> None:
    async with harness.client(**keyed(pool_size=2)) as client:
        await full(client, 2)
        response = await client.post(
            "/conversation", json={"title": "warm", "env": {"GREETING": "hi"}}, headers=auth(ALICE)
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "READY" and body["start"] == "warm"
        assert body["owner"] == "alice" and body["title"] == "warm"
        cid = body["id"]
        events = (await client.get(f"/conversation/{cid}/event", headers=auth(ALICE))).json()["results"]
        assert events[0]["seq"] == 1
        first = events[0]["detail"]
        assert first["type"] == "ConversationStatusUpdate" and first["status"] == "READY"
        assert first["conversation_id"] == cid
        assert all(e["conversation_id"] == cid for e in events)
        # The claim's env reaches the tasks; the claimed token is the conversation's.
        assert (await run_shell(client, cid, ALICE, 'printf "%s" "$GREETING"')) == "hi"
        status = await full(client, 2)  # refilled
        assert status["claimed_total"] == 1 and status["cold_total"] == 0 and status["size"] == 2


async def test_options_a_spare_cannot_take_start_cold_and_limits_are_the_pools_own(harness: Harness) -> None:
    async with harness.client(**keyed(pool_size=2, max_conversations_per_user=1)) as client:
        await full(client, 2)
        limited = await client.post("/conversation", json={"limits": {"pids": 64}}, headers=auth(ALICE))
        assert limited.status_code == 201
        # A cold start answers once registered: still STARTING, or READY if it was that quick.
        assert limited.json()["start"] == "cold" and limited.json()["status"] in ("STARTING", "READY")
        # Two spares are ready, yet alice is at her maximum: 429, and no spare is spent.
        refused = await client.post("/conversation", json={}, headers=auth(ALICE))
        assert refused.status_code == 429
        status = await pool_of(client)
        assert status["ready"] == 2 and status["claimed_total"] == 0 and status["cold_total"] == 1
        # Spares are no conversations: not listed, not counted.
        listed = (await client.get("/conversation", headers=auth(ADMIN_KEY))).json()["results"]
        assert [c["id"] for c in listed] == [limited.json()["id"]]
        assert (await client.get("/conversation-count", headers=auth(ADMIN_KEY))).json() == {"count": 1}
        for spare in await spares(harness):
            assert (await client.get(f"/conversation/{spare}", headers=auth(ADMIN_KEY))).status_code == 404
        assert (await client.get("/pool", headers=auth(ALICE))).status_code == 403


async def test_a_claimed_sandbox_never_returns_to_the_pool(harness: Harness) -> None:
    async with harness.client(**keyed(pool_size=1)) as client:
        seen: set[str] = set()
        for _ in range(3):
            await full(client, 1)
            body = (await client.post("/conversation", json={}, headers=auth(ALICE))).json()
            assert body["start"] == "warm" and body["id"] not in seen
            seen.add(body["id"])
            cid = body["id"]
            # No file of an earlier conversation is there; this one leaves one behind.
            script = "test -e left-behind && echo SEEN; echo secret > left-behind; echo DONE"
            assert (await run_shell(client, cid, ALICE, script)) == "DONE\n"
            assert (await client.delete(f"/conversation/{cid}", headers=auth(ALICE))).status_code == 204
            assert cid not in await spares(harness)
            assert await harness.runtime.find(UUID(cid)) is None


async def test_the_seed_ws_create_still_sees_starting_then_ready_when_warm(harness: Harness) -> None:
    async with harness.client(pool_size=1) as client:
        await eventually(lambda: _ready_count(client, 1))
        ws = await ws_connect(str(client.base_url), "/conversation?title=seed")
        try:
            first = await recv_json(ws)
            assert first["seq"] == 0 and first["detail"]["status"] == "STARTING"
            frames = await recv_until(ws, is_status("READY"))
            assert frames[-1]["seq"] == 1 and frames[-1]["conversation_id"] == first["conversation_id"]
            await ws.send('{"runnable": {"type": "Ticker", "interval": 0.01, "iterations": 2}, "title": "t"}')
            tick = await recv_until(ws, lambda f: f["detail"]["type"] == "Tick")
            await recv_until(ws, task_finished(tick[-1]["detail"]["task_id"]))
        finally:
            await ws.close()
        cid = first["conversation_id"]
        assert (await client.get(f"/conversation/{cid}")).json()["start"] == "warm"


async def _ready_count(client: httpx.AsyncClient, size: int) -> bool:
    status = (await client.get("/pool")).json()
    return bool(status["ready"] == size)


async def test_shutdown_removes_spares_and_keeps_conversations(harness: Harness) -> None:
    async with harness.client(**keyed(pool_size=2)) as client:
        await full(client, 2)
        cid = (await client.post("/conversation", json={}, headers=auth(BOB))).json()["id"]
        await full(client, 2)
    assert await spares(harness) == []
    handles = await harness.runtime.list()
    assert [str(h.conversation_id) for h in handles] == [cid]
    assert handles[0].state is SandboxState.RUNNING and handles[0].spec.owner == "bob"
    async with harness.client(**keyed(pool_size=0)) as again:  # a restart adopts the conversation
        info = (await again.get(f"/conversation/{cid}", headers=auth(BOB))).json()
        assert info["status"] == "READY" and info["owner"] == "bob"
        assert (await pool_of(again))["ready"] == 0


@pytest.mark.parametrize("pool_size", [0])
async def test_no_pool_means_every_create_is_cold(harness: Harness, pool_size: int) -> None:
    async with harness.client(pool_size=pool_size) as client:
        body = (await client.post("/conversation", json={})).json()
        assert body["start"] == "cold"
        status = (await client.get("/pool")).json()
        assert status == {
            "size": 0,
            "sizes": {"default": 0},
            "ready": 0,
            "starting": 0,
            "claimed_total": 0,
            "cold_total": 1,
        }


async def test_spares_are_neither_reaped_nor_on_the_firehose(harness: Harness) -> None:
    async with harness.client(pool_size=2, idle_timeout=0.3, reap_interval=0.1) as client:
        firehose = await ws_connect(str(client.base_url), "/firehose/")
        try:
            await eventually(lambda: _ready_count(client, 2))
            before = set(await spares(harness))
            body = (await client.post("/conversation", json={})).json()
            assert body["start"] == "warm" and body["id"] in before
            seen = await recv_until(firehose, is_status("READY"))  # its STARTING (claiming), its READY
            assert {f["conversation_id"] for f in seen} == {body["id"]} and seen[-1]["seq"] == 1

            async def reaped() -> bool:
                return (await client.get(f"/conversation/{body['id']}")).status_code == 404

            await eventually(reaped)  # the conversation idles out; the spares stay
            assert before - {body["id"]} <= set(await spares(harness))
            assert (await client.get("/conversation-count")).json() == {"count": 0}
            frames = []
            while True:
                try:
                    frames.append(await recv_json(firehose, within=0.5))
                except TimeoutError:
                    break
            assert {f["conversation_id"] for f in frames} <= {body["id"]}, frames
        finally:
            await firehose.close()


async def test_a_spare_that_died_is_removed_and_the_create_starts_cold(harness: Harness) -> None:
    from gateway.runtimes.memory import MemoryRuntime

    assert isinstance(harness.runtime, MemoryRuntime)
    async with harness.client(pool_size=1, reconcile_interval=3600) as client:
        await eventually(lambda: _ready_count(client, 1))
        (dead,) = await spares(harness)
        await harness.runtime.stop_agent(UUID(dead))  # behind the pool's back
        body = (await client.post("/conversation", json={"title": "fallback"})).json()
        assert body["start"] == "cold" and body["id"] == dead  # the id it was given, a fresh sandbox

        async def ready() -> bool:
            info = (await client.get(f"/conversation/{dead}")).json()
            return bool(info["status"] == "READY")

        await eventually(ready)
        events = (await client.get(f"/conversation/{dead}/event")).json()["results"]
        assert [e["seq"] for e in events] == [1] and events[0]["detail"]["status"] == "READY"
        status = (await client.get("/pool")).json()
        assert status["claimed_total"] == 0 and status["cold_total"] == 1


async def test_a_template_with_a_pool_is_claimed_warm_and_only_by_its_own_creates(harness: Harness) -> None:
    async with harness.client(**keyed(pool_size=0, pool_sizes="node=1")) as client:
        built = await client.post(
            "/template", params={"name": "node", "from": "node:20"}, headers=auth(ADMIN_KEY)
        )
        assert built.status_code == 200, built.text
        status = await full(client, 1)
        assert status["sizes"] == {"default": 0, "node": 1}
        listed = (await client.get("/template", headers=auth(ALICE))).json()["results"]
        assert {t["name"]: t["pool"] for t in listed} == {"default": False, "node": True}
        cold = await client.post("/conversation", json={}, headers=auth(ALICE))
        assert cold.json()["start"] == "cold", "the default template keeps no spares here"
        warm = await client.post("/conversation", json={"template": "node"}, headers=auth(ALICE))
        body = warm.json()
        assert body["start"] == "warm" and body["status"] == "READY" and body["template"] == "node"
        found = await harness.runtime.find(UUID(body["id"]))
        assert found is not None and found.spec.template == "node" and found.spec.pool is None


def test_pool_sizes_that_do_not_parse_are_refused() -> None:
    assert Settings(pool_sizes=" node=2, ci=1 ").pool_sizes_by_template() == {"node": 2, "ci": 1}
    for bad in ("node", "node=x", "=2", "Node=1", "node=2,,"):
        with pytest.raises(ValidationError):
            Settings(pool_sizes=bad)
