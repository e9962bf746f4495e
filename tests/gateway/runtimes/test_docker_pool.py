"""The pool on the Docker runtime: a warm create is READY in its 201, the claim is out of its
tasks' reach, nothing of one conversation reaches the next, a gateway that died without its
shutdown is replaced by one that adopts the spare and the claimed conversation (labels still
say "spare": the agent's claim says what it became), and a shutdown removes the spares."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from dockertools import alabelled
from gw_helpers import is_status, recv_json, recv_until, ws_connect

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings
from tests.helpers import eventually

pytestmark = pytest.mark.docker
Serve = Callable[..., AbstractAsyncContextManager[str]]


async def pool_full(client: httpx.AsyncClient, size: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status: dict[str, Any] = (await client.get("/pool")).json()
        return status if status["ready"] == size and status["starting"] == 0 else None

    return await eventually(check, what=f"{size} spares ready")


async def shell(client: httpx.AsyncClient, cid: str, command: str) -> str:
    created = await client.post(
        f"/conversation/{cid}/task", json={"runnable": {"type": "Shell", "command": command}}
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    async def done() -> bool:
        task = (await client.get(f"/conversation/{cid}/task/{task_id}")).json()
        return bool(task["status"] in ("COMPLETED", "ERROR"))

    await eventually(done)
    events = (
        await client.get(f"/conversation/{cid}/event", params={"task_id": task_id, "limit": 100})
    ).json()
    return "".join(e["detail"]["data"] for e in events["results"] if e["detail"]["type"] == "TaskOutput")


async def spare_containers(install: str) -> list[str]:
    found = await alabelled(f"{cfg.POOL}=default")
    ours = set((await alabelled(f"{cfg.INSTALL}={install}"))["containers"])
    return [container for container in found["containers"] if container in ours]


async def test_warm_creates_on_docker_and_a_restart_that_adopts_the_pool(
    serve: Serve, docker_settings: Settings, docker_runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = docker_settings.model_copy(update={"pool_size": 1})
    app = create_app(settings, runtime=docker_runtime)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        await pool_full(client, 1)
        first = (await client.post("/conversation", json={"title": "one", "env": {"GREETING": "hi"}})).json()
        assert first["status"] == "READY" and first["start"] == "warm"
        out = await shell(
            client,
            first["id"],
            'cat /data/agent/claim.json /data/agent/token; echo "rc=$?"; printf "$GREETING"; '
            "echo x > /data/workspace/mine",
        )
        assert "rc=1" in out and out.endswith("hi"), out
        assert "conversation_id" not in out
        assert (await client.delete(f"/conversation/{first['id']}")).status_code == 204
        await pool_full(client, 1)
        # The seed's browser flow, warm: STARTING (claiming), then the agent's READY as seq 1.
        ws = await ws_connect(base, "/conversation?title=seed")
        try:
            first_frame = await recv_json(ws)
            assert first_frame["seq"] == 0 and first_frame["detail"]["status"] == "STARTING"
            ready = (await recv_until(ws, is_status("READY")))[-1]
            assert ready["seq"] == 1 and ready["conversation_id"] == first_frame["conversation_id"]
        finally:
            await ws.close()
        seed = (await client.get(f"/conversation/{first_frame['conversation_id']}")).json()
        assert seed["start"] == "warm"
        assert (await client.delete(f"/conversation/{seed['id']}")).status_code == 204
        await pool_full(client, 1)
        second = (await client.post("/conversation", json={"title": "two"})).json()
        assert second["start"] == "warm" and second["id"] != first["id"]
        assert (
            await shell(client, second["id"], "test -e /data/workspace/mine && echo SEEN; echo DONE")
        ) == "DONE\n"
        await pool_full(client, 1)
        spares_before = await spare_containers(settings.install)
        # This gateway dies without its shutdown (as with kill -9): its spare stays.
        context: GatewayContext = app.state.gateway

        async def killed() -> None:
            return None

        monkeypatch.setattr(context.manager.pool, "close", killed)
    assert len(spares_before) == 2  # the spare of the pool, and the claimed "two" (labels say spare)

    restarted = await DockerRuntime.connect(settings)
    try:
        again = create_app(settings, runtime=restarted)
        async with serve(again) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
            status = await pool_full(client, 1)
            assert status["claimed_total"] == 0 and status["cold_total"] == 0
            assert sorted(await spare_containers(settings.install)) == sorted(spares_before), "none made anew"
            listed = (await client.get("/conversation")).json()["results"]
            assert [(c["id"], c["title"], c["status"]) for c in listed] == [(second["id"], "two", "READY")]
            assert "DONE" in await shell(client, second["id"], "echo DONE")
        # A shutdown removes the spare; the conversation keeps running.
        left = await restarted.list()
        assert [(str(h.conversation_id), h.spec.pool) for h in left] == [(second["id"], None)]
    finally:
        await restarted.close()
