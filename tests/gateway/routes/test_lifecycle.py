"""The lifecycle, on both runtimes: limits (429), idle reaping with its event, DELETE
leaves nothing, a failed start stays visible as ERROR, a restarted gateway finds its
conversations."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from uuid import UUID

from gw_helpers import (
    ADMIN_KEY,
    USER_KEYS,
    Harness,
    agent_of,
    auth,
    close_code,
    create_ready,
    is_status,
    keyed,
    leftovers,
    recv_json,
    recv_until,
    restarted_after_an_event,
    ws_connect,
)

from gateway.runtimes import procfs
from sandbox_agent.protocol import WS_CLOSE_CONVERSATION_ENDED, WS_CLOSE_LIMIT_REACHED, WS_CLOSE_NOT_FOUND
from tests.helpers import eventually

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]


async def test_limits_answer_429_and_stop_nothing(any_harness: Harness) -> None:
    async with any_harness.client(**keyed(max_conversations=2, max_conversations_per_user=1)) as client:
        url = str(client.base_url)
        mine = await create_ready(client, ALICE)
        again = await client.post("/conversation", json={}, headers=auth(ALICE))
        assert again.status_code == 429
        assert "alice" in again.json()["detail"] and "maximum" in again.json()["detail"]
        ws = await ws_connect(url, "/conversation/", ALICE)
        error = await recv_json(ws)
        assert error["detail"]["type"] == "Error" and "maximum" in error["detail"]["message"]
        assert await close_code(ws) == WS_CLOSE_LIMIT_REACHED

        await create_ready(client, BOB)
        full = await client.post("/conversation", json={}, headers=auth(ADMIN_KEY))
        assert full.status_code == 429 and "installation" in full.json()["detail"]
        assert (await client.get(f"/conversation/{mine}", headers=auth(ALICE))).json()["status"] == "READY"
        count = await client.get("/conversation-count", headers=auth(ADMIN_KEY))
        assert count.json() == {"count": 2}


async def test_idle_conversation_is_reaped_with_its_event(any_harness: Harness) -> None:
    async with any_harness.client(reap_interval=0.2) as client:
        url = str(client.base_url)
        # Each made busy right away: the reaper looks every 0.2s.
        busy = await create_ready(client, idle_timeout=2)
        task = await client.post(
            f"/conversation/{busy}/task", json={"runnable": {"type": "Shell", "command": "sleep 600"}}
        )
        assert task.status_code == 201
        followed = await create_ready(client, idle_timeout=2)
        follower = await ws_connect(url, f"/conversation/{followed}?after_seq=-1")
        firehose = await ws_connect(url, "/firehose/")  # an admin listening does not keep anything alive
        idle = await create_ready(client, idle_timeout=2)

        frames = await recv_until(
            firehose, lambda f: f["conversation_id"] == idle and is_status("STOPPING")(f)
        )
        assert "idle" in frames[-1]["detail"]["reason"]

        async def gone() -> bool:
            return (await client.get(f"/conversation/{idle}")).status_code == 404

        await eventually(gone)
        assert await leftovers(any_harness, idle) == []
        # Neither a running task nor an open connection is idle.
        assert (await client.get(f"/conversation/{busy}")).json()["status"] == "READY"
        assert (await client.get(f"/conversation/{followed}")).json()["status"] == "READY"
        await follower.close()
        await firehose.close()


async def test_delete_leaves_nothing(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        url = str(client.base_url)
        cid = await create_ready(client)
        agent = await agent_of(any_harness, cid)
        assert await leftovers(any_harness, cid, agent), "a live conversation holds something"
        task = await client.post(
            f"/conversation/{cid}/task", json={"runnable": {"type": "Shell", "command": "sleep 600"}}
        )
        assert task.status_code == 201
        follower = await ws_connect(url, f"/conversation/{cid}?after_seq=-1")
        # The task's processes, known while their agent is their parent (once it is gone they
        # are nobody's descendants any more): the 204 comes once they are gone too.
        family = [] if agent is None else await eventually(lambda: _family(agent), what="the task's process")

        assert (await client.delete(f"/conversation/{cid}")).status_code == 204
        assert [process.pid for process in family if procfs.is_alive(process)] == []
        stopping = await recv_until(follower, is_status("STOPPING"))
        assert "deleted" in stopping[-1]["detail"]["reason"]
        assert await close_code(follower) == WS_CLOSE_CONVERSATION_ENDED

        assert await leftovers(any_harness, cid, agent) == []
        for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/event"), ("GET", "/agent-info")):
            response = await client.request(method, f"/conversation/{cid}{path}")
            assert response.status_code == 404, (method, path)
        assert await close_code(await ws_connect(url, f"/conversation/{cid}")) == WS_CLOSE_NOT_FOUND
        assert await any_harness.runtime.find(UUID(cid)) is None


async def _family(agent: procfs.ProcessId) -> list[procfs.ProcessId]:
    return await asyncio.to_thread(procfs.descendants, agent.pid)


async def test_failed_start_stays_visible_as_error(any_harness: Harness) -> None:
    async with any_harness.client(error_retention=600) as client:
        url = str(client.base_url)
        # An agent that cannot start: the local subprocess reads PYTHONHOME; the container's
        # agent ignores PYTHON* (-I: see gateway.runtimes.docker_bundle) but not the smallest limit.
        breaking: dict[str, object] = {"env": {"PYTHONHOME": "/nonexistent"}}
        if any_harness.kind in ("docker", "swarm"):
            breaking["limits"] = {"memory_bytes": 6 * 1024 * 1024}
        created = await client.post("/conversation", json=breaking)
        cid = created.json()["id"]
        early = await ws_connect(url, f"/conversation/{cid}")  # while STARTING, most likely
        frames = await recv_until(early, is_status("ERROR"))
        assert all(is_status("STARTING")(f) for f in frames[:-1]) and all(f["seq"] == 0 for f in frames)
        assert await close_code(early) == WS_CLOSE_CONVERSATION_ENDED, "one ERROR frame, then the close"

        async def failed() -> dict[str, str] | None:
            info = (await client.get(f"/conversation/{cid}")).json()
            return info if info["status"] == "ERROR" else None

        info = await eventually(failed)
        assert info["reason"] and "agent" in info["reason"]
        for host_path in (str(any_harness.settings.state_dir), sys.executable, str(Path.cwd())):
            assert host_path not in info["reason"], "a reason a user sees names no host path"
        proxied = await client.get(f"/conversation/{cid}/agent-info")
        assert proxied.status_code == 409 and "ERROR" in proxied.json()["detail"]
        ws = await ws_connect(url, f"/conversation/{cid}")
        frame = await recv_json(ws)
        assert frame["seq"] == 0 and frame["detail"]["status"] == "ERROR" and frame["detail"]["reason"]
        assert await close_code(ws) == WS_CLOSE_CONVERSATION_ENDED
        assert await leftovers(any_harness, cid) == []
        assert (await client.delete(f"/conversation/{cid}")).status_code == 204
        assert (await client.get(f"/conversation/{cid}")).status_code == 404


async def test_restarted_gateway_finds_its_conversations(any_harness: Harness) -> None:
    async with restarted_after_an_event(any_harness, "survivor") as (client, cid):
        info = (await client.get(f"/conversation/{cid}")).json()
        assert info["status"] == "READY" and info["title"] == "survivor" and info["owner"] == "local"
        events = (await client.get(f"/conversation/{cid}/event")).json()["results"]
        assert [e["detail"]["type"] for e in events] == ["ConversationStatusUpdate", "before"]
        ws = await ws_connect(str(client.base_url), f"/conversation/{cid}")
        assert [f["seq"] for f in [await recv_json(ws), await recv_json(ws)]] == [1, 2]
        await ws.close()
        assert (await client.delete(f"/conversation/{cid}")).status_code == 204
    assert await any_harness.runtime.list() == []


async def test_creates_are_rate_limited_per_principal(harness: Harness) -> None:
    async with harness.client(**keyed(create_burst=2, create_rate=0.001)) as client:
        url = str(client.base_url)
        for _ in range(2):
            assert (await client.post("/conversation", json={}, headers=auth(ALICE))).status_code == 201
        fast = await client.post("/conversation", json={}, headers=auth(ALICE))
        assert fast.status_code == 429 and "too fast" in fast.json()["detail"], fast.text
        ws = await ws_connect(url, "/conversation/", ALICE)
        error = await recv_json(ws)
        assert error["detail"]["type"] == "Error" and "too fast" in error["detail"]["message"]
        assert await close_code(ws) == WS_CLOSE_LIMIT_REACHED
        # Deleting does not give the allowance back; another principal has its own.
        for conversation in (await client.get("/conversation", headers=auth(ADMIN_KEY))).json()["results"]:
            await client.delete(f"/conversation/{conversation['id']}", headers=auth(ADMIN_KEY))
        assert (await client.post("/conversation", json={}, headers=auth(ALICE))).status_code == 429
        assert (await client.post("/conversation", json={}, headers=auth(BOB))).status_code == 201


async def test_failed_starts_count_against_their_owner(process_harness: Harness) -> None:
    async with process_harness.client(**keyed(max_failed_starts=2, error_retention=0)) as client:
        broken = {"env": {"PYTHONHOME": "/nonexistent"}}
        for _ in range(2):
            created = await client.post("/conversation", json=broken, headers=auth(ALICE))
            assert created.status_code == 201
            cid = created.json()["id"]

            async def over(cid: str = cid) -> bool:
                info = await client.get(f"/conversation/{cid}", headers=auth(ALICE))
                return info.status_code == 404 or info.json()["status"] == "ERROR"

            await eventually(over)
            await client.delete(f"/conversation/{cid}", headers=auth(ALICE))  # gone, still counted
        refused = await client.post("/conversation", json={}, headers=auth(ALICE))
        assert refused.status_code == 429, refused.text
        assert "failed starts" in refused.json()["detail"] and "alice" in refused.json()["detail"]
        assert (await client.post("/conversation", json={}, headers=auth(BOB))).status_code == 201


async def test_a_request_right_after_the_create_waits_for_ready(any_harness: Harness) -> None:
    """A STARTING conversation's routes are served once it is READY, not refused with a 503."""
    async with any_harness.client() as client:
        created = (await client.post("/conversation", json={})).json()
        assert created["status"] == "STARTING"
        info = await client.get(f"/conversation/{created['id']}/agent-info")
        assert info.status_code == 200, info.text
        assert info.json()["conversation_id"] == created["id"]
        assert (await client.get(f"/conversation/{created['id']}")).json()["status"] == "READY"
