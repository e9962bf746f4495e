"""Several gateways over one installation, where they race: two in-process gateways (real uvicorn),
each with its own settings and its own instance of the runtime (but on the memory runtime, whose
registry is its instance: there they share one).

- Both pools hold the same ready spare (the second gateway adopted the first's at its start, and
  neither lists again): the first claims it, the second's claim is refused (``SpareTaken``). The
  second's create goes on cold under a new id: its client gets a usable conversation, the winner's
  is untouched, the loser's firehose shows no end of the winner's, and nothing is left afterwards.
- A conversation paused through one gateway, asked for through the other before that one listed
  again: the request resumes it and is answered (not a timeout on a frozen agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from gw_helpers import (
    ADMIN_KEY,
    USER_KEYS,
    Harness,
    auth,
    context_of_app,
    create_ready,
    keyed,
    leftovers,
    recv_json,
    recv_until,
    ws_connect,
)
from websockets.asyncio.client import ClientConnection

from gateway.context import GatewayContext
from gateway.runtimes.base import Runtime
from gateway.runtimes.process import ProcessRuntime
from tests.helpers import eventually

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]
#: Neither gateway lists the runtime again by itself during a test: the races stay open.
QUIET = {"sync_interval": 3600.0, "reconcile_interval": 3600.0}


@pytest.fixture(params=["memory", "process", pytest.param("docker", marks=pytest.mark.docker)])
def race_harness(request: pytest.FixtureRequest) -> Harness:
    fixture = {"memory": "harness", "process": "process_harness", "docker": "docker_harness"}
    harness = request.getfixturevalue(fixture[str(request.param)])
    assert isinstance(harness, Harness)
    return harness


@contextlib.asynccontextmanager
async def _another_instance(harness: Harness) -> AsyncIterator[Harness]:
    """``harness``'s installation through a runtime instance of its own, as a second gateway
    process would have it (the memory runtime's registry is its instance: the same one)."""
    if harness.kind == "memory":
        yield harness
        return
    runtime: Runtime
    if harness.kind == "docker":
        from gateway.runtimes.docker import DockerRuntime

        runtime = await DockerRuntime.connect(harness.settings)
    else:
        runtime = ProcessRuntime(harness.settings)
    try:
        yield Harness(harness.settings, runtime, harness.run_uvicorn)
    finally:
        await runtime.close()


async def _ready_spares(context: GatewayContext) -> set[UUID]:
    return context.manager.pool.ready_ids()


@pytest.fixture
async def two_pools_one_spare(race_harness: Harness) -> AsyncIterator[tuple[str, str, Harness, UUID]]:
    """Gateways ``a`` and ``b`` (base URLs), ``b``'s harness and the one spare both pools hold."""
    settings = keyed(pool_size=1, max_conversations=2, **QUIET)
    async with race_harness.serve(**settings) as a:
        context_a = context_of_app(race_harness.app)

        async def a_has_one() -> set[UUID] | None:
            return spares if len(spares := await _ready_spares(context_a)) == 1 else None

        (spare,) = await eventually(a_has_one, what="a's spare ready")
        async with _another_instance(race_harness) as other, other.serve(**settings) as b:
            assert await _ready_spares(context_of_app(other.app)) == {spare}, "b adopted it, made none"
            yield a, b, other, spare


@contextlib.asynccontextmanager
async def _clients(*bases: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(base_url=b, timeout=60)) for b in bases]


async def _status(client: httpx.AsyncClient, key: str, cid: str) -> str | None:
    answer = await client.get(f"/conversation/{cid}", headers=auth(key))
    return None if answer.status_code == 404 else str(answer.json()["status"])


async def _frames(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                frames.append(json.loads(await ws.recv()))
    except TimeoutError:
        return frames


@pytest.mark.parametrize("flow", ["post", "ws"])
async def test_the_gateway_that_loses_a_spare_starts_cold_under_a_new_id(
    race_harness: Harness, two_pools_one_spare: tuple[str, str, Harness, UUID], flow: str
) -> None:
    a, b, harness_b, spare = two_pools_one_spare
    firehose = await ws_connect(b, "/firehose/", ADMIN_KEY)
    async with _clients(a, b) as (ca, cb):
        won = (await ca.post("/conversation", json={"title": "won"}, headers=auth(ALICE))).json()
        assert (won["id"], won["start"], won["status"]) == (str(spare), "warm", "READY")

        if flow == "post":
            answer = await cb.post("/conversation", json={"title": "lost"}, headers=auth(BOB))
            assert answer.status_code == 201, answer.text
            lost = answer.json()
            assert lost["start"] == "cold" and lost["status"] in ("STARTING", "READY"), lost
            cid = lost["id"]
        else:
            follower = await ws_connect(b, "/conversation/?title=lost", BOB)
            first = await recv_json(follower)
            assert first["detail"]["status"] == "STARTING", first
            cid = first["conversation_id"]
            ready = await recv_until(follower, lambda f: f["detail"].get("status") == "READY")
            assert ready[-1]["seq"] == 1 and ready[-1]["conversation_id"] == cid, ready
            assert {f["conversation_id"] for f in ready} == {cid}, "every frame names the new id"
            await follower.close()
        assert cid != str(spare), "the spare's id is the winner's conversation"

        async def usable() -> bool:
            return await _status(cb, BOB, cid) == "READY"

        await eventually(usable, what="the loser's conversation READY")
        mine = {"detail": {"type": "mine"}}
        posted = await cb.post(f"/conversation/{cid}/event", json=mine, headers=auth(BOB))
        assert posted.status_code == 201, posted.text
        events = (await cb.get(f"/conversation/{cid}/event", headers=auth(BOB))).json()["results"]
        assert [e["detail"]["type"] for e in events] == ["ConversationStatusUpdate", "mine"]
        assert (await cb.get(f"/conversation/{cid}", headers=auth(BOB))).json()["start"] == "cold"

        # The winner's is untouched: READY, alice's, its log its own, through either gateway
        # (b found it when its claim lost: STARTING until its watch sees the agent answer).
        assert await _status(ca, ALICE, str(spare)) == "READY"

        async def ready_through_b() -> bool:
            return await _status(cb, ALICE, str(spare)) == "READY"

        await eventually(ready_through_b, what="the winner's conversation READY through b")
        for client in (ca, cb):
            assert await _status(client, BOB, str(spare)) is None, "bob never owned the spare's id"
        theirs = (await ca.get(f"/conversation/{spare}/event", headers=auth(ALICE))).json()["results"]
        assert [e["seq"] for e in theirs] == [1]
        held = context_of_app(harness_b.app).manager.lookup(spare)
        assert held is None or held.spec.owner == "alice", "b holds no record of bob's under that id"
        # The limits (2) count both, once each: a third create is refused through either gateway.
        for client in (ca, cb):
            refused = await client.post("/conversation", json={}, headers=auth(ALICE))
            assert refused.status_code == 429, refused.text

        # b's firehose: the winner's id never ended or failed; the new id started and is READY.
        frames = await _frames(firehose, 1.0)
        await firehose.close()
        new_ones = [f for f in frames if f["conversation_id"] == cid]
        assert any(f["seq"] == 1 and f["detail"].get("status") == "READY" for f in new_ones), new_ones
        theirs_there = [f for f in frames if f["conversation_id"] == str(spare)]
        assert any(f["seq"] == 1 and f["detail"].get("status") == "READY" for f in theirs_there), frames
        for frame in theirs_there:
            assert frame["detail"].get("status") not in ("ERROR", "STOPPING"), frames

        for client, key, ended in ((ca, ALICE, str(spare)), (cb, BOB, cid)):
            assert (await client.delete(f"/conversation/{ended}", headers=auth(key))).status_code == 204
        for harness, ended in ((race_harness, str(spare)), (harness_b, cid)):
            assert await leftovers(harness, ended) == [], ended
        conversations = [h for h in await race_harness.runtime.list() if h.spec.pool is None]
        assert conversations == [], conversations


async def test_a_request_through_a_gateway_that_did_not_pause_it_resumes_it_and_is_answered(
    process_harness: Harness,
) -> None:
    """Process runtime: a paused agent is frozen (SIGSTOP) and its port still accepts connections.
    Without the look at the runtime, ``b`` waits ``proxy_timeout`` (here 30 s) and answers 504."""
    harness = process_harness
    b_settings = keyed(proxy_timeout=30.0, **QUIET)
    async with (
        harness.serve(**keyed()) as a,
        _another_instance(harness) as other,
        other.serve(**b_settings) as b,
        _clients(a, b) as (ca, cb),
    ):
        cid = await create_ready(ca, ALICE, title="paused through a")

        async def ready_in_b() -> bool:
            return await _status(cb, ALICE, cid) == "READY"

        await eventually(ready_in_b, what="b holds it READY")

        paused = await ca.post(f"/conversation/{cid}/pause", headers=auth(ALICE))
        assert paused.status_code == 200, paused.text
        assert await _status(cb, ALICE, cid) == "READY", "b has not listed again"
        posted = await cb.post(
            f"/conversation/{cid}/event", json={"detail": {"type": "through-b"}}, headers=auth(ALICE)
        )
        assert posted.status_code == 201, posted.text
        await eventually(ready_in_b, what="b resumed it")

        async def resumed_for_a() -> bool:
            return await _status(ca, ALICE, cid) == "READY"

        await eventually(resumed_for_a, what="a sees it resumed")
        events = (await cb.get(f"/conversation/{cid}/event", headers=auth(ALICE))).json()["results"]
        kinds = [(e["detail"]["type"], e["detail"].get("status")) for e in events]
        assert ("through-b", None) in kinds and kinds.count(("ConversationStatusUpdate", "READY")) == 2

        # The same for a follower that connects through b meanwhile.
        assert (await ca.post(f"/conversation/{cid}/pause", headers=auth(ALICE))).status_code == 200
        follower = await ws_connect(b, f"/conversation/{cid}?after_seq=0", ALICE)
        frames = await recv_until(follower, lambda f: f["detail"].get("type") == "through-b")
        assert frames[0]["seq"] == 1, frames
        await follower.close()
        assert (await ca.delete(f"/conversation/{cid}", headers=auth(ALICE))).status_code == 204
