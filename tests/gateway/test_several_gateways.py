"""Several gateways, one installation, no database: two real gateway processes on the process
runtime sharing one state dir. Any of them serves, follows and ends what the other created,
the limits hold across both under concurrent creates, idle reaping counts the activity seen by
either (and ends a conversation once), and a gateway killed with SIGKILL loses nothing.
The Docker twin: tests/gateway/runtimes/test_several_gateways_docker.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from gateway_pair import (
    ADMIN,
    ALICE,
    BOB,
    PAIR_SETTINGS,
    Gateway,
    create,
    event_types,
    gateway_pair,
    listed,
    no_tracebacks,
    status_of,
    trigger,
    until_status,
)
from gw_helpers import auth, close_code, recv_until, ws_connect
from gw_process import gateway_env
from process_agents import agent_processes, kill_agents
from websockets.asyncio.client import ClientConnection

from gateway.runtimes import procfs
from tests.helpers import eventually


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Path]:
    """The installation's folder in the shared state dir; no agent outlives the test."""
    folder = tmp_path / "state" / f"pair-{uuid4().hex[:6]}"
    yield folder
    kill_agents(tmp_path / "state")
    assert agent_processes(tmp_path / "state") == {}


def pair_env(agent_env: dict[str, str], install: Path, **settings: str) -> Callable[[int], dict[str, str]]:
    def env_of(port: int) -> dict[str, str]:
        return gateway_env(agent_env, port, install.parent, install=install.name, **PAIR_SETTINGS, **settings)

    return env_of


def live_folders(install: Path) -> set[str]:
    """The conversations (not spares) whose agent runs, from the runtime's own metadata."""
    found = set()
    for meta in install.glob("*/meta.json"):
        data = json.loads(meta.read_text())
        if "pid" not in data:
            continue  # a start before its agent is launched: nothing runs yet
        if data["spec"].get("pool") is None and procfs.is_alive(
            procfs.ProcessId(data["pid"], data["started"])
        ):
            found.add(meta.parent.name)
    return found


def frame_of(
    conversation_id: str, kind: str, status: str | None = None
) -> Callable[[dict[str, object]], bool]:
    def check(frame: dict[str, object]) -> bool:
        detail = frame.get("detail")
        return (
            frame.get("conversation_id") == conversation_id
            and isinstance(detail, dict)
            and detail.get("type") == kind
            and (status is None or detail.get("status") == status)
        )

    return check


async def test_any_gateway_serves_follows_and_ends_what_the_other_created(
    tmp_path: Path, agent_env: dict[str, str], install: Path
) -> None:
    async with gateway_pair(pair_env(agent_env, install), tmp_path) as (a, b):
        firehose = await ws_connect(b.base, "/firehose/", ADMIN)
        created = await create(a, ALICE, title="made through a")
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        # b's firehose shows it with no request to b: found by b's listing, followed from event 1.
        await recv_until(firehose, frame_of(cid, "ConversationStatusUpdate", "READY"))

        created_too = await create(a, ALICE, title="asked for at once")
        other = created_too.json()["id"]
        assert await trigger(b, ALICE, other, "asked-through-b") == 201, "served before b listed it"
        assert await status_of(b, BOB, other) is None, "another user's is 404 through b too"
        info = (await b.client.get(f"/conversation/{other}", headers=auth(ALICE))).json()
        assert info["owner"] == "alice" and info["title"] == "asked for at once"

        follower = await ws_connect(a.base, f"/conversation/{cid}?after_seq=0", ALICE)
        assert await trigger(b, ALICE, cid, "from-b") == 201
        await recv_until(follower, frame_of(cid, "from-b"))
        await recv_until(firehose, frame_of(cid, "from-b"))
        assert (await event_types(a, ALICE, cid))[-1] == "from-b"
        assert {cid, other} <= await listed(b)

        # Ended through b: a's follower and b's firehose see it end; a answers 404, never a 500.
        assert (await b.client.delete(f"/conversation/{cid}", headers=auth(ALICE))).status_code == 204
        await recv_until(follower, frame_of(cid, "ConversationStatusUpdate", "STOPPING"))
        assert await close_code(follower) is not None
        await recv_until(firehose, frame_of(cid, "ConversationStatusUpdate", "STOPPING"))
        events = await a.client.get(f"/conversation/{cid}/event", headers=auth(ALICE))
        assert events.status_code == 404, events.text
        assert await status_of(a, ALICE, cid) is None
        await eventually(lambda: _not_listed(a, cid), what="gone from a's list")
        await firehose.close()
        # The token each gateway needs is in the runtime's metadata, readable by this user only.
        folder = install / other
        for name in ("meta.json", "token"):
            assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(install).st_mode) == 0o700
        no_tracebacks(a, b)


async def _not_listed(gateway: Gateway, conversation_id: str) -> bool:
    return conversation_id not in await listed(gateway)


async def test_limits_hold_across_two_gateways_under_concurrent_creates(
    tmp_path: Path, agent_env: dict[str, str], install: Path
) -> None:
    env = pair_env(agent_env, install, max_conversations="3", max_conversations_per_user="2")
    async with gateway_pair(env, tmp_path) as (a, b):

        async def storm(key: str, count: int) -> list[str]:
            answers = await asyncio.gather(*(create((a, b)[n % 2], key, title=f"n{n}") for n in range(count)))
            assert {answer.status_code for answer in answers} <= {201, 429}, [
                answer.text for answer in answers
            ]
            return [answer.json()["id"] for answer in answers if answer.status_code == 201]

        alices = await storm(ALICE, 8)
        assert len(alices) <= 2, "never more than the per-user limit"
        bobs = await storm(BOB, 8)
        assert len(alices) + len(bobs) <= 3, "never more than the installation's limit"
        for gateway in (a, b):
            await eventually(lambda gateway=gateway: _lists(gateway, set(alices + bobs)))
        # A 201 may come while its agent is still launching (the start is registered first).
        for key, ids in ((ALICE, alices), (BOB, bobs)):
            for cid in ids:
                await until_status(a, key, cid, "READY")
        assert live_folders(install) == set(alices + bobs), "the refused left nothing running"
        # Nor an agent whose folder is gone (a start cancelled as it yielded, during its launch).
        assert set(agent_processes(install)) == set(alices + bobs), "a refused create left its agent"
        # With room and no contention, a create succeeds through either gateway.
        for cid in alices + bobs:
            assert (await a.client.delete(f"/conversation/{cid}", headers=auth(ADMIN))).status_code == 204
        assert agent_processes(install) == {}, "a delete answered before its agent was gone"
        # b counts what a deleted until its next sync ends those records (gateway.limits).
        await eventually(lambda: _lists(b, set()))
        last = [(gateway, key, await create(gateway, key)) for gateway, key in ((b, BOB), (a, ALICE))]
        for gateway, key, answer in last:
            assert answer.status_code == 201, answer.text
            # Launched before the pair is killed: a gateway killed mid-launch leaves an agent
            # its metadata does not name yet (the install fixture's kill_agents() finds it anyway).
            await until_status(gateway, key, answer.json()["id"], "READY")
        no_tracebacks(a, b)


async def _lists(gateway: Gateway, wanted: set[str]) -> bool:
    return await listed(gateway) == wanted


async def test_activity_through_one_gateway_keeps_the_others_reaper_off_and_it_ends_once(
    tmp_path: Path, agent_env: dict[str, str], install: Path
) -> None:
    async with gateway_pair(pair_env(agent_env, install, reap_interval="0.2"), tmp_path) as (a, b):
        firehose = await ws_connect(a.base, "/firehose/", ADMIN)  # passive: no activity of anyone's
        cid = (await create(a, ALICE, title="kept busy through a", idle_timeout=2)).json()["id"]
        await until_status(b, ALICE, cid, "READY")  # b holds a record of it: b's reaper looks at it
        for _ in range(12):  # six seconds, three idle timeouts: used through a only
            assert await trigger(a, ALICE, cid, "busy") == 201
            await asyncio.sleep(0.5)
        assert await status_of(b, ALICE, cid) == "READY", "b counted what a served"
        frames = await recv_until(firehose, frame_of(cid, "ConversationStatusUpdate", "STOPPING"))

        async def removed() -> bool:
            return cid not in live_folders(install)

        await eventually(removed, what="reaped once idle")
        await until_status(a, ALICE, cid, None)
        await until_status(b, ALICE, cid, None)
        frames += await _frames_for(firehose, 1.0)  # a second reaper's STOPPING would be here by now
        stops = [frame for frame in frames if frame_of(cid, "ConversationStatusUpdate", "STOPPING")(frame)]
        assert len(stops) == 1 and "idle" in str(stops[0]["detail"])
        await firehose.close()
        no_tracebacks(a, b)


async def _frames_for(ws: ClientConnection, seconds: float) -> list[dict[str, object]]:
    """The frames ``ws`` receives within ``seconds``."""
    frames: list[dict[str, object]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frames.append(json.loads(await ws.recv()))
    return frames


async def test_a_gateway_killed_with_sigkill_loses_nothing(
    tmp_path: Path, agent_env: dict[str, str], install: Path
) -> None:
    async with gateway_pair(pair_env(agent_env, install), tmp_path) as (a, b):
        ids = [(await create(a, ALICE, title=f"kept {n}")).json()["id"] for n in range(2)]
        for cid in ids:
            await until_status(a, ALICE, cid, "READY")
            assert await trigger(a, ALICE, cid, "before") == 201
        a.process.send_signal(signal.SIGKILL)
        await a.process.wait()
        assert live_folders(install) == set(ids), "its conversations keep running"
        for cid in ids:
            # b may have seen it start (a sync during a's start) and watch it until its agent answers.
            await until_status(b, ALICE, cid, "READY")
            assert await trigger(b, ALICE, cid, "after") == 201
            assert (await event_types(b, ALICE, cid))[1:] == ["before", "after"]
        assert await listed(b) == set(ids)
        no_tracebacks(b)
