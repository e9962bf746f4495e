"""The pool across restarts, with real gateway processes on the process runtime: a gateway
killed with SIGKILL and started again adopts its ready spares and claimed conversations (no
duplicates) and removes half-made spares; SIGTERM removes the spares, conversations stay."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from gw_helpers import TIMEOUT, exists, make_spec, read_text
from gw_process import gateway_env, gateway_process, gateway_up
from process_agents import kill_agents

from gateway.runtimes import procfs
from gateway.runtimes.process_files import spec_to_json, write_meta
from tests.helpers import eventually, free_port


def folders(install: Path) -> dict[str, dict[str, Any]]:
    """Every sandbox folder of the installation: its id -> its metadata's spec."""
    found: dict[str, dict[str, Any]] = {}
    for meta in install.glob("*/meta.json"):
        found[meta.parent.name] = json.loads(read_text(meta))["spec"]
    return found


def spare_ids(install: Path) -> set[str]:
    return {cid for cid, spec in folders(install).items() if spec.get("pool")}


async def pool_full(client: httpx.AsyncClient, size: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status: dict[str, Any] = (await client.get("/pool")).json()
        return status if status["ready"] == size and status["starting"] == 0 else None

    return await eventually(check, what=f"{size} spares ready")


def half_made_spare(install: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A spare a gateway was killed while starting, long ago: metadata that says not ready yet,
    and a live process as its agent."""
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    spec = make_spec(owner="", title="", pool="default", created_at=datetime.now(UTC) - timedelta(hours=1))
    folder = install / str(spec.conversation_id)
    folder.mkdir(parents=True)
    ident = procfs.identify(process.pid)
    meta = {"spec": spec_to_json(spec), "pid": process.pid, "started": ident.started, "port": free_port()}
    write_meta(folder, meta | {"ready": False})
    return str(spec.conversation_id), process


async def test_kill_and_restart_adopt_the_pool_and_sigterm_removes_it(
    tmp_path: Path, agent_env: dict[str, str]
) -> None:
    port, state = free_port(), tmp_path / "state"
    install = state / f"pool-{uuid4().hex[:6]}"
    env = gateway_env(agent_env, port, state, install=install.name, pool_size="2")
    log = tmp_path / "gateway.log"
    half: subprocess.Popen[bytes] | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            async with gateway_process(env, log) as first:
                await gateway_up(client)
                await pool_full(client, 2)
                created = (await client.post("/conversation", json={"title": "kept"})).json()
                assert created["start"] == "warm" and created["status"] == "READY"
                cid = created["id"]
                posted = await client.post(f"/conversation/{cid}/event", json={"detail": {"type": "before"}})
                assert posted.status_code == 201
                await pool_full(client, 2)
                spares_before = spare_ids(install)
                assert len(spares_before) == 2 and cid not in spares_before
                first.send_signal(signal.SIGKILL)
                await first.wait()
            half_id, half = half_made_spare(install)

            async with gateway_process(env, log) as second:
                await gateway_up(client)
                status = await pool_full(client, 2)
                assert status["claimed_total"] == 0
                assert spare_ids(install) == spares_before, "the ready spares are adopted, none made anew"
                assert not exists(install / half_id) and half.poll() is not None, "half-made: removed"
                listed = (await client.get("/conversation")).json()["results"]
                assert [(c["id"], c["status"], c["title"]) for c in listed] == [(cid, "READY", "kept")]
                events = (await client.get(f"/conversation/{cid}/event")).json()["results"]
                assert [e["detail"]["type"] for e in events] == ["ConversationStatusUpdate", "before"]
                # An adopted spare is claimed like any.
                warm = (await client.post("/conversation", json={"title": "after"})).json()
                assert warm["start"] == "warm" and warm["id"] in spares_before
                await pool_full(client, 2)
                second.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(second.wait(), TIMEOUT) in (0, -signal.SIGTERM)
            assert spare_ids(install) == set(), "SIGTERM removes the spares"
            assert set(folders(install)) == {cid, warm["id"]}, "conversations keep running"
            for conversation in (cid, warm["id"]):
                meta = json.loads(read_text(install / conversation / "meta.json"))
                assert procfs.is_alive(procfs.ProcessId(meta["pid"], meta["started"]))
    finally:
        if half is not None and half.poll() is None:
            half.kill()
            half.wait()
        kill_agents(state)
