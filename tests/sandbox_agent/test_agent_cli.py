"""The ``convoy-agent`` command as a real process: token rules, serving, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket as socketlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from agent_helpers import TOKEN, group_gone

from sandbox_agent.protocol import TOKEN_HEADER
from tests.helpers import eventually, free_port

AGENT = str(Path(sys.executable).parent / "convoy-agent")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVOY_")}
    env.update(extra)
    return env


@asynccontextmanager
async def agent_process(
    tmp_path: Path, env: dict[str, str], *args: str, argv0: list[str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    command = [*(argv0 or [AGENT]), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workspace", str(tmp_path / "ws"), "--state-dir", str(tmp_path / "state"), *args]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def wait_ready(url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:

        async def ready() -> bool:
            assert process.returncode is None, "agent exited before it was ready"
            try:
                return (await client.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, within=60)


@pytest.mark.parametrize("module", [False, True])
async def test_refuses_to_start_without_a_token(tmp_path: Path, module: bool) -> None:
    argv0 = [sys.executable, "-m", "sandbox_agent"] if module else None
    async with agent_process(tmp_path, clean_env(), argv0=argv0) as (process, _):
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"CONVOY_AGENT_TOKEN" in stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(("env", "args"), [({}, ("--unprotected",)), ({"CONVOY_AGENT_UNPROTECTED": "1"}, ())])
async def test_starts_unprotected_only_when_told(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...]
) -> None:
    async with agent_process(tmp_path, clean_env(**env), *args) as (process, url):
        await wait_ready(url, process)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/event")).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0


async def test_console_script_serves_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    cid = uuid4()
    env = clean_env(
        CONVOY_AGENT_TOKEN=TOKEN, CONVOY_CONVERSATION_ID=str(cid), CONVOY_AGENT_KILL_GRACE_SECONDS="1"
    )
    async with agent_process(tmp_path, env) as (process, url):
        await wait_ready(url, process)
        async with httpx.AsyncClient(base_url=url, headers={TOKEN_HEADER: TOKEN}, timeout=30) as client:
            first = (await client.get("/event")).json()["results"][0]
            assert first["detail"]["status"] == "READY"
            assert first["detail"]["conversation_id"] == str(cid)
            info = (await client.get("/agent-info")).json()
            assert info["limits"]["kill_grace_seconds"] == 1
            # The gateway's uvloop and httptools are installed beside the agent; mapped
            # into it they would cost every sandbox memory it is not meant to spend.
            maps = await asyncio.to_thread(Path(f"/proc/{process.pid}/maps").read_text)
            assert "uvloop" not in maps and "httptools" not in maps
            runnable = {"type": "Shell", "command": "echo $$; sleep 1000"}
            task_id = (await client.post("/task", json={"runnable": runnable})).json()["id"]

            async def pid() -> int | None:
                events = (
                    await client.get("/event", params={"task_id": task_id, "type": "TaskOutput"})
                ).json()
                return int(events["results"][0]["detail"]["data"]) if events["results"] else None

            leader = await eventually(pid)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    assert group_gone(leader)
    lines = (tmp_path / "state" / "events.jsonl").read_bytes().splitlines()
    last = json.loads(lines[-1])
    assert last["detail"] == {
        "type": "TaskStatusUpdate",
        "task_id": task_id,
        "status": "CANCELLED",
        "exit_code": None,
        "error": None,
    }
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))


async def test_bad_settings_exit_2(tmp_path: Path) -> None:
    env = clean_env(CONVOY_AGENT_TOKEN=TOKEN, CONVOY_CONVERSATION_ID="not-a-uuid")
    async with agent_process(tmp_path, env) as (process, _):
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"conversation" in stderr.lower()


async def test_the_token_file_wins_and_no_token_stays_in_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    env = clean_env(CONVOY_AGENT_TOKEN=TOKEN)
    async with agent_process(tmp_path, env, "--token-file", str(token_file)) as (process, url):
        await wait_ready(url, process)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/agent-info", headers={TOKEN_HEADER: TOKEN})).status_code == 401
            headers = {TOKEN_HEADER: "from-the-file"}
            assert (await client.get("/agent-info", headers=headers)).status_code == 200
            # The variable is scrubbed from the agent's environment, so no task inherits it.
            command = "echo token=${CONVOY_AGENT_TOKEN:-none}"
            made = await client.post(
                "/task", json={"runnable": {"type": "Shell", "command": command}}, headers=headers
            )
            task_id = made.json()["id"]

            async def output() -> str | None:
                params = {"task_id": task_id, "type": "TaskOutput"}
                events = (await client.get("/event", params=params, headers=headers)).json()["results"]
                return "".join(event["detail"]["data"] for event in events) or None

            assert (await eventually(output)).strip() == "token=none"


async def test_a_handed_token_is_kept_in_the_token_file_and_removed(tmp_path: Path) -> None:
    handed, kept = tmp_path / "handed", tmp_path / "agent" / "token"
    handed.write_text("handed-over\n")
    args = ("--token-file", str(kept), "--handed-token", str(handed))
    for start in ("first", "later"):  # a later start finds no handed file: the kept one serves
        async with agent_process(tmp_path, clean_env(), *args) as (process, url):
            await wait_ready(url, process)
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                answer = await client.get("/agent-info", headers={TOKEN_HEADER: "handed-over"})
                assert answer.status_code == 200, start
        assert not handed.exists() and kept.read_text() == "handed-over"
        assert (kept.stat().st_mode & 0o777, kept.parent.stat().st_mode & 0o777) == (0o400, 0o700)


@pytest.mark.parametrize(
    ("content", "args"), [("", ()), ("t", ("--run-as", "0:0")), ("t", ("--run-as", "x"))]
)
async def test_an_empty_token_file_or_a_bad_run_as_exits_2(
    tmp_path: Path, content: str, args: tuple[str, ...]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    async with agent_process(tmp_path, clean_env(), "--token-file", str(token_file), *args) as (process, _):
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, stderr
    assert b"empty" in stderr or b"run_as" in stderr, stderr


async def test_sigterm_ends_open_task_streams_and_the_agent_exits(tmp_path: Path) -> None:
    # A graceful wait of an hour for open connections: only ending the stream lets it exit.
    env = clean_env(CONVOY_AGENT_TOKEN=TOKEN, CONVOY_AGENT_KILL_GRACE_SECONDS="3600")
    async with agent_process(tmp_path, env) as (process, url):
        await wait_ready(url, process)
        async with httpx.AsyncClient(base_url=url, headers={TOKEN_HEADER: TOKEN}, timeout=60) as client:
            body = {"runnable": {"type": "Shell", "command": "echo started; sleep 1000"}}
            async with client.stream("POST", "/task", params={"wait": "true"}, json=body) as answer:
                lines = answer.aiter_lines()
                assert json.loads(await anext(lines))["type"] == "task"
                process.send_signal(signal.SIGTERM)
                rest = [json.loads(line) async for line in lines if line]
        assert await asyncio.wait_for(process.wait(), 60) == 0
    # Cut short (no final task line): the task's end is in the log, as the contract says.
    assert all(line["type"] == "event" for line in rest)
    last = json.loads((tmp_path / "state" / "events.jsonl").read_bytes().splitlines()[-1])
    assert last["detail"]["type"] == "TaskStatusUpdate" and last["detail"]["status"] == "CANCELLED"


async def test_it_serves_on_a_unix_socket_made_before_it_drops_replacing_a_stale_one(tmp_path: Path) -> None:
    socket_dir = Path(os.environ["CONVOY_DOCKER_SOCKET_DIR"]) / uuid4().hex[:8]  # short: a socket's path
    await asyncio.to_thread(socket_dir.mkdir)
    socket = socket_dir / "agent.sock"
    # A socket left by an earlier run: binding over it would fail (EADDRINUSE) were it not replaced.
    await asyncio.to_thread(_bound_and_closed, socket)
    env = clean_env(CONVOY_AGENT_TOKEN=TOKEN)
    command = [AGENT, "--uds", str(socket), "--workspace", str(tmp_path / "ws"), "--state-dir", str(tmp_path)]
    process = await asyncio.create_subprocess_exec(*command, env=env, stderr=asyncio.subprocess.PIPE)
    try:
        url, transport = "http://agent", httpx.AsyncHTTPTransport(uds=str(socket))
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:

            async def ready() -> bool:
                assert process.returncode is None, "agent exited before it was ready"
                try:
                    return (await client.get(f"{url}/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=60)
            assert (await client.get(f"{url}/agent-info")).status_code == 401
            assert (await client.get(f"{url}/agent-info", headers={TOKEN_HEADER: TOKEN})).status_code == 200
        assert (await asyncio.to_thread(socket.stat)).st_mode & 0o777 == 0o666
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0


def _bound_and_closed(path: Path) -> None:
    """Bind a Unix socket at ``path`` and close it, leaving the file behind."""
    with socketlib.socket(socketlib.AF_UNIX) as sock:
        sock.bind(str(path))
