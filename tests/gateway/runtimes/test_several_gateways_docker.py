"""Two real gateway processes on one Docker engine and installation: either serves what the
other created (the agent token read back from the sandbox's volume), the limits hold across
both under concurrent creates, and a gateway killed with SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from dockertools import alabelled
from gateway_pair import (
    ADMIN,
    ALICE,
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
from gw_helpers import auth, recv_until, ws_connect

from gateway.settings import Settings
from tests.helpers import eventually

pytestmark = pytest.mark.docker


def docker_env(settings: Settings, state: Path, port: int) -> dict[str, str]:
    """A gateway on the host driving the engine (its sandboxes reached on published ports)."""
    keep = {name: value for name, value in os.environ.items() if not name.startswith("CONVOY_")}
    configured = {
        "port": str(port),
        "runtime": "docker",
        "install": settings.install,
        "docker_image": settings.docker_image,
        "docker_reach": "published",
        "state_dir": str(state),
        "docker_socket_dir": os.environ["CONVOY_DOCKER_SOCKET_DIR"],  # tests/conftest.py: a short one
        "start_timeout": "120",
        "pool_size": "0",  # spares are the pool's tests'; these count conversations
        "max_conversations": "2",
        **PAIR_SETTINGS,
    }
    return keep | {f"CONVOY_{name.upper()}": value for name, value in configured.items()}


async def containers_of(install: str) -> int:
    return len((await alabelled(f"convoy.install={install}"))["containers"])


async def test_two_gateways_on_one_engine_share_limit_serve_and_survive_sigkill(
    docker_settings: Settings, tmp_path: Path
) -> None:
    env = lambda port: docker_env(docker_settings, tmp_path / "state", port)  # noqa: E731
    async with gateway_pair(env, tmp_path) as (a, b):
        firehose = await ws_connect(b.base, "/firehose/", ADMIN)
        answers = await asyncio.gather(*(create((a, b)[n % 2], ALICE, title=f"n{n}") for n in range(4)))
        assert {answer.status_code for answer in answers} <= {201, 429}, [answer.text for answer in answers]
        ids = [answer.json()["id"] for answer in answers if answer.status_code == 201]
        assert len(ids) <= 2, "never more than the installation's limit"
        if not ids:  # every create yielded to another (contention): with room, one goes through
            ids = [(await create(a, ALICE, title="alone")).json()["id"]]
        for cid in ids:
            await until_status(b, ALICE, cid, "READY")
            assert await trigger(b, ALICE, cid, "before") == 201
            await recv_until(firehose, lambda frame, cid=cid: frame.get("conversation_id") == cid)
        await eventually(lambda: _only(b, set(ids)), what="the refused are listed nowhere")

        async def one_container_each() -> bool:  # its sandbox alone: no network, no relay
            return await containers_of(docker_settings.install) == len(ids)

        await eventually(one_container_each, what="the refused left no container")

        a.process.kill()
        await a.process.wait()
        for cid in ids:
            assert await status_of(b, ALICE, cid) == "READY"
            assert await trigger(b, ALICE, cid, "after") == 201
            assert (await event_types(b, ALICE, cid))[-2:] == ["before", "after"]
        for cid in ids:
            response = await b.client.delete(f"/conversation/{cid}", headers=auth(ALICE))
            assert response.status_code == 204

            async def gone(cid: str = cid) -> bool:  # the 204 comes once the sandbox is stopped
                return not any((await alabelled(f"convoy.conversation-id={cid}")).values())

            await eventually(gone, within=30, what="everything of it removed")
        await firehose.close()
        no_tracebacks(b)


async def _only(gateway: Gateway, wanted: set[str]) -> bool:
    return await listed(gateway) == wanted
