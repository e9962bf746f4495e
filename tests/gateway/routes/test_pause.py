"""Pause and resume: the sandbox is frozen (the engine / the kernel says so), a request
resumes it, followers see PAUSED and READY, idle ones are paused then reaped after the
paused TTL, a restarted gateway finds them PAUSED, and they count against the limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import pytest
from gw_helpers import (
    USER_KEYS,
    Harness,
    agent_of,
    auth,
    create_ready,
    is_status,
    keyed,
    leftovers,
    recv_until,
    ws_connect,
)
from lifecycle_helpers import status_of, statuses

from gateway.errors import RuntimeFailure
from gateway.runtimes import procfs
from tests.gateway.swarm_cluster import sandbox_processes
from tests.helpers import eventually

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]


async def _frozen(harness: Harness, cid: str) -> bool:
    """What the runtime's own witness says: the engine's State.Paused, every process of
    the agent stopped (state T in /proc), or on swarm every task process in the sandbox's
    container stopped (the agent's descendants; the agent itself answers on)."""
    if harness.kind == "swarm":
        found = await asyncio.to_thread(
            sandbox_processes, harness.cluster, harness.settings.install, UUID(cid)
        )
        assert found, "the witness needs a process the agent started"
        return all(state == "T" for _, state in found)
    if harness.kind == "docker":
        name = f"convoy-{harness.settings.install}-{cid}"
        docker = await asyncio.create_subprocess_exec(
            "docker", "inspect", "--format", "{{.State.Paused}}", name, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await docker.communicate()
        return out.decode().strip() == "true"
    agent = await agent_of(harness, cid)
    assert agent is not None
    family = [agent, *procfs.descendants(agent.pid)]
    return all(procfs.state(process.pid) == "T" for process in family)


def _ticks(harness: Harness, cid: str) -> int:
    """Tick events in the agent's journal on disk (read without asking the frozen agent)."""
    state = harness.settings.state_dir / harness.settings.install / cid / "state"
    return sum(path.read_bytes().count(b'"type":"Tick"') for path in state.rglob("*") if path.is_file())


async def _terminal(client: Any, cid: str) -> None:
    """A terminal's shell: a process for the swarm witness that, unlike a running task, does
    not keep the conversation from being idle."""
    assert (await client.post(f"/conversation/{cid}/terminal", json={})).status_code == 201


async def test_pause_freezes_the_sandbox_and_a_request_resumes_it(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        cid = await create_ready(client)
        ticker = {"runnable": {"type": "Ticker", "interval": 0.05, "iterations": 100000}}
        assert (await client.post(f"/conversation/{cid}/task", json=ticker)).status_code == 201
        sleeper = {"runnable": {"type": "Shell", "command": "sleep 600"}}
        assert (await client.post(f"/conversation/{cid}/task", json=sleeper)).status_code == 201

        async def ticked() -> bool:
            return bool((await client.get(f"/conversation/{cid}/event?type=Tick")).json()["results"])

        await eventually(ticked)
        paused = await client.post(f"/conversation/{cid}/pause")
        assert paused.status_code == 200 and paused.json()["status"] == "PAUSED", paused.text
        assert await status_of(client, cid) == "PAUSED"
        assert await _frozen(any_harness, cid)
        if any_harness.kind == "process":
            before = _ticks(any_harness, cid)
            assert before > 0, "the Ticker ticked before the pause (the journal holds its events)"
            await asyncio.sleep(0.5)  # ten tick intervals: a running Ticker would have logged some
            assert _ticks(any_harness, cid) == before, "the Ticker went on while paused"
        again = await client.post(f"/conversation/{cid}/pause")
        assert again.status_code == 200 and again.json()["status"] == "PAUSED"

        # Any request resumes it first, with no error for the caller.
        info = await client.get(f"/conversation/{cid}/agent-info")
        assert info.status_code == 200, info.text
        assert await status_of(client, cid) == "READY"
        assert not await _frozen(any_harness, cid)
        assert (await statuses(client, cid))[-2:] == ["PAUSED", "READY"]
        count = len([e for e in (await client.get(f"/conversation/{cid}/event?type=Tick")).json()["results"]])

        async def ticking() -> bool:
            page = (await client.get(f"/conversation/{cid}/event?type=Tick")).json()["results"]
            return len(page) > count

        await eventually(ticking, what="the Ticker goes on after the resume")
        resumed = await client.post(f"/conversation/{cid}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "READY"
        assert (await client.delete(f"/conversation/{cid}")).status_code == 204
        assert await leftovers(any_harness, cid) == []


async def test_followers_and_the_firehose_see_paused_then_ready(harness: Harness) -> None:
    async with harness.client() as client:
        url = str(client.base_url)
        cid = await create_ready(client)
        earlier = await create_ready(client)
        await client.post(f"/conversation/{earlier}/pause")  # paused before the firehose starts
        follower = await ws_connect(url, f"/conversation/{cid}?after_seq=-1")
        firehose = await ws_connect(url, "/firehose/")
        assert (await client.post(f"/conversation/{cid}/pause")).json()["status"] == "PAUSED"
        await recv_until(follower, is_status("PAUSED"))
        assert (await client.post(f"/conversation/{cid}/resume")).json()["status"] == "READY"
        await recv_until(follower, is_status("READY"))
        seen = await recv_until(firehose, lambda f: f["conversation_id"] == cid and is_status("READY")(f))
        assert any(f["conversation_id"] == cid and is_status("PAUSED")(f) for f in seen)
        assert (await client.post(f"/conversation/{earlier}/resume")).json()["status"] == "READY"
        resumed = await recv_until(firehose, lambda f: f["conversation_id"] == earlier)
        assert is_status("READY")(resumed[-1]) and resumed[-1]["seq"] > 1, "its READY, from its log"
        await follower.close()
        await firehose.close()


async def test_a_websocket_to_a_paused_conversation_resumes_it(harness: Harness) -> None:
    async with harness.client() as client:
        cid = await create_ready(client)
        await client.post(f"/conversation/{cid}/pause")
        follower = await ws_connect(str(client.base_url), f"/conversation/{cid}")
        await recv_until(follower, is_status("READY"))
        assert await status_of(client, cid) == "READY"
        await follower.close()


async def test_idle_ones_are_paused_then_removed_after_the_paused_ttl(any_harness: Harness) -> None:
    async with any_harness.client(reap_interval=0.2, paused_ttl=4.0) as client:
        created = await client.post("/conversation", json={"idle_timeout": 1, "on_idle": "pause"})
        assert created.status_code == 201 and created.json()["on_idle"] == "pause"
        kept = created.json()["id"]
        if any_harness.kind == "swarm":  # the witness there: a process of the agent's stopped
            await _terminal(client, kept)
        deleted = (await client.post("/conversation", json={"idle_timeout": 1})).json()["id"]

        async def paused() -> bool:
            return await status_of(client, kept) == "PAUSED"

        await eventually(paused)
        assert await _frozen(any_harness, kept)

        async def gone(cid: str) -> bool:
            return (await client.get(f"/conversation/{cid}")).status_code == 404

        await eventually(lambda: gone(deleted), what="the default idle policy deletes")
        await eventually(lambda: gone(kept), what="paused_ttl removes the paused one")
        assert await leftovers(any_harness, kept) == [] and await leftovers(any_harness, deleted) == []


async def test_the_default_idle_policy_is_a_setting(harness: Harness) -> None:
    async with harness.client(on_idle="pause") as client:
        cid = await create_ready(client)
        assert (await client.get(f"/conversation/{cid}")).json()["on_idle"] == "pause"
        refused = await client.post("/conversation", json={"on_idle": "sleep"})
        assert refused.status_code == 422 and "on_idle" in json.dumps(refused.json())


async def test_a_restarted_gateway_finds_it_paused(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        cid = await create_ready(client, title="sleeper", on_idle="pause")
        assert (await client.post(f"/conversation/{cid}/pause")).status_code == 200
    async with any_harness.client() as again:
        info = (await again.get(f"/conversation/{cid}")).json()
        assert info["status"] == "PAUSED" and info["title"] == "sleeper" and info["on_idle"] == "pause"
        assert (await again.get(f"/conversation/{cid}/agent-info")).status_code == 200
        assert await status_of(again, cid) == "READY"
        assert (await again.delete(f"/conversation/{cid}")).status_code == 204
    assert await any_harness.runtime.list() == []


async def test_paused_ones_count_against_the_limits_and_stay_private(harness: Harness) -> None:
    async with harness.client(**keyed(max_conversations_per_user=1)) as client:
        cid = await create_ready(client, ALICE)
        assert (await client.post(f"/conversation/{cid}/pause", headers=auth(ALICE))).status_code == 200
        refused = await client.post("/conversation", json={}, headers=auth(ALICE))
        assert refused.status_code == 429 and "maximum" in refused.json()["detail"]
        for action in ("pause", "resume"):
            other = await client.post(f"/conversation/{cid}/{action}", headers=auth(BOB))
            assert other.status_code == 404, action
        assert await status_of(client, cid, ALICE) == "PAUSED"  # nothing of bob's resumed it


async def test_a_sandbox_that_cannot_be_resumed_is_a_502_that_says_so(harness: Harness) -> None:
    async with harness.client() as client:
        cid = await create_ready(client)
        await client.post(f"/conversation/{cid}/pause")
        await harness.runtime.remove(UUID(cid))  # behind the gateway's back
        answer = await client.get(f"/conversation/{cid}/agent-info")
        assert answer.status_code == 502 and "could not be resumed" in answer.json()["detail"], answer.text
        assert (await client.delete(f"/conversation/{cid}")).status_code == 204


async def test_a_runtime_that_cannot_pause_is_refused_before_anything_is_recorded(harness: Harness) -> None:
    harness.runtime.pauses = False  # type: ignore[attr-defined]
    async with harness.client() as client:
        cid = await create_ready(client)
        before = await statuses(client, cid)
        refused = await client.post(f"/conversation/{cid}/pause")
        assert refused.status_code == 409 and "cannot pause" in refused.json()["detail"], refused.text
        assert await statuses(client, cid) == before, "no PAUSED (nor READY) for a pause never made"
        assert await status_of(client, cid) == "READY"


async def test_a_freeze_that_fails_says_so_in_the_ready_it_records(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(conversation_id: UUID) -> None:
        raise RuntimeFailure("the freezer is broken")

    monkeypatch.setattr(harness.runtime, "pause", broken)
    async with harness.client() as client:
        cid = await create_ready(client)
        failed = await client.post(f"/conversation/{cid}/pause")
        assert failed.status_code == 502 and "the freezer is broken" in failed.json()["detail"], failed.text
        events = (await client.get(f"/conversation/{cid}/event?type=ConversationStatusUpdate")).json()
        paused, ready = [event["detail"] for event in events["results"]][-2:]
        assert paused["status"] == "PAUSED" and ready["status"] == "READY"
        assert "not paused" in ready["reason"] and "the freezer is broken" in ready["reason"]
        assert await status_of(client, cid) == "READY"
