"""run_server: refuses to expose local mode, and a gateway killed with SIGKILL and
started again (real processes) finds its conversations with their events."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from gw_helpers import TIMEOUT, create_ready, exists, kill_agents, read_text

from gateway.server import is_loopback, run_server
from gateway.settings import Settings
from tests.helpers import eventually, free_port

_RUN = "from gateway.server import run_server; from gateway.settings import Settings; run_server(Settings())"


def test_refuses_non_loopback_without_keys(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as refused:
        run_server(Settings(host="0.0.0.0", state_dir=tmp_path))
    assert "refusing" in str(refused.value.code) and "CONVOY_API_KEYS" in str(refused.value.code)
    with pytest.raises(SystemExit) as bad:
        run_server(Settings(host="127.0.0.1", api_keys="no-colon", state_dir=tmp_path))
    assert "bad settings" in str(bad.value.code)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


@asynccontextmanager
async def _gateway_process(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _RUN, env=env, stdout=output, stderr=output, cwd=Path(__file__).parents[2]
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_gateway_killed_and_restarted_finds_its_conversations(
    tmp_path: Path, agent_env: dict[str, str]
) -> None:
    port = free_port()
    state = tmp_path / "state"
    env = {
        **agent_env,
        "CONVOY_PORT": str(port),
        "CONVOY_STATE_DIR": str(state),
        "CONVOY_RUNTIME": "process",
        "CONVOY_INSTALL": "killtest",
    }
    log = tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    try:
        await _kill_and_restart(env, log, url, state)
    finally:
        kill_agents(state)


async def _kill_and_restart(env: dict[str, str], log: Path, url: str, state: Path) -> None:
    async def up(client: httpx.AsyncClient) -> bool:
        try:
            return (await client.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        async with _gateway_process(env, log) as first:
            await eventually(lambda: up(client))
            cid = await create_ready(client, title="survivor")
            await client.post(f"/conversation/{cid}/event", json={"detail": {"type": "before-kill"}})
            first.send_signal(signal.SIGKILL)
            await first.wait()
        text = read_text(log)
        assert "local single-user mode" in text and "runtime process" in text

        async with _gateway_process(env, log) as second:
            await eventually(lambda: up(client))
            info = (await client.get(f"/conversation/{cid}")).json()
            assert info["status"] == "READY" and info["title"] == "survivor"
            events = (await client.get(f"/conversation/{cid}/event")).json()["results"]
            assert [e["detail"]["type"] for e in events] == ["ConversationStatusUpdate", "before-kill"]
            assert (await client.delete(f"/conversation/{cid}")).status_code == 204
            assert not exists(state / "killtest" / cid)
            second.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal it caught.
            assert await asyncio.wait_for(second.wait(), TIMEOUT) in (0, -signal.SIGTERM)
        assert "shutdown 5/5" in read_text(log)
