"""``convoy mcp`` driven by the MCP SDK's own client, over stdio (the client spawns the
command) and over streamable HTTP (``--http``), against a real gateway on loopback: list the
tools, create a sandbox, run, write, read, list, delete; a bad sandbox id is a tool error
with the gateway's message, and the server keeps serving."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from gw_helpers import USER_KEYS, Harness, auth, keyed
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

from tests.helpers import eventually, free_port

ROOT = Path(__file__).parents[2]
ALICE = USER_KEYS["alice"]
_CONVOY = "from gateway.cli import main; main()"
TOOLS = {"create_sandbox", "run_command", "write_file", "read_file", "list_files", "delete_sandbox"}


def mcp_env(gateway_url: str, agent_env: dict[str, str]) -> dict[str, str]:
    return {**agent_env, "PYTHONPATH": str(ROOT), "CONVOY_URL": gateway_url, "CONVOY_API_KEY": ALICE}


def text_of(result: CallToolResult) -> str:
    return "".join(part.text for part in result.content if isinstance(part, TextContent))


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """A tool's structured answer (``result`` unwrapped); fails on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult) and not result.is_error, text_of(result)
    structured = result.structured_content or {}
    return structured.get("result", structured) if set(structured) <= {"result"} else structured


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult) and result.is_error, result
    return text_of(result)


async def the_whole_round(client: Client, gateway: httpx.AsyncClient) -> None:
    listed = await client.list_tools()
    assert {tool.name for tool in listed.tools} == TOOLS
    created = await call(client, "create_sandbox", title="from mcp")
    sandbox_id = created["sandbox_id"]
    assert created["status"] == "READY"
    seen = (await gateway.get(f"/conversation/{sandbox_id}", headers=auth(ALICE))).json()
    assert seen["title"] == "from mcp" and seen["owner"] == "alice"

    ran = await call(client, "run_command", sandbox_id=sandbox_id, command="echo out; echo err >&2; exit 3")
    assert (ran["exit_code"], ran["stdout"], ran["stderr"], ran["status"]) == (
        3,
        "out\n",
        "err\n",
        "ERROR",
    )

    written = await call(
        client, "write_file", sandbox_id=sandbox_id, path="notes/hello.txt", content="héllo\n"
    )
    assert written == {"path": "notes/hello.txt", "size": len("héllo\n".encode())}
    assert await call(client, "read_file", sandbox_id=sandbox_id, path="notes/hello.txt") == "héllo\n"
    shown = await call(client, "run_command", sandbox_id=sandbox_id, command="cat notes/hello.txt")
    assert shown["stdout"] == "héllo\n"
    files = await call(client, "list_files", sandbox_id=sandbox_id, pattern="*.txt")
    assert [entry["path"] for entry in files] == ["notes/hello.txt"]
    everything = await call(client, "list_files", sandbox_id=sandbox_id)
    assert {entry["path"] for entry in everything} >= {"notes", "notes/hello.txt"}
    resource = await client.read_resource(f"convoy://sandbox/{sandbox_id}/file/notes%2Fhello.txt")
    assert "héllo" in str(resource)

    # Failures are tool errors with the gateway's words; the server serves on.
    assert "not a conversation id" in await refused(client, "run_command", sandbox_id="nope", command="true")
    unknown = str(uuid.uuid4())
    assert "not found" in await refused(client, "read_file", sandbox_id=unknown, path="x")
    missing = await refused(client, "read_file", sandbox_id=sandbox_id, path="missing.txt")
    assert missing == "Error executing tool read_file: no such file: 'missing.txt'"  # the agent's words
    escape = await refused(client, "read_file", sandbox_id=sandbox_id, path="../../etc/passwd")
    assert "root:" not in escape

    assert await call(client, "delete_sandbox", sandbox_id=sandbox_id) == {"deleted": sandbox_id}
    assert (await gateway.get(f"/conversation/{sandbox_id}", headers=auth(ALICE))).status_code == 404
    assert "not found" in await refused(client, "run_command", sandbox_id=sandbox_id, command="true")


async def test_stdio(harness: Harness, agent_env: dict[str, str]) -> None:
    async with harness.client(**keyed()) as gateway:
        server = StdioServerParameters(
            command=sys.executable,
            args=["-c", _CONVOY, "mcp"],
            env=mcp_env(str(gateway.base_url), agent_env),
            cwd=str(ROOT),
        )
        async with Client(server, read_timeout_seconds=120) as client:
            await the_whole_round(client, gateway)


@asynccontextmanager
async def http_server(env: dict[str, str], port: int, log: Path) -> AsyncIterator[str]:
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CONVOY,
            "mcp",
            "--http",
            "--port",
            str(port),
            env=env,
            stdout=output,
            stderr=output,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}/mcp"
    try:

        async def up() -> bool:
            assert process.returncode is None, f"the MCP server exited: see {log}"
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.get(url)
                return True
            except httpx.HTTPError:
                return False

        await eventually(up, what="the MCP server listens")
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_streamable_http(harness: Harness, agent_env: dict[str, str], tmp_path: Path) -> None:
    async with harness.client(**keyed()) as gateway:
        env = mcp_env(str(gateway.base_url), agent_env)
        async with http_server(env, free_port(), tmp_path / "mcp.log") as url:
            async with Client(url, read_timeout_seconds=120) as client:
                await the_whole_round(client, gateway)
            async with Client(url, read_timeout_seconds=120) as again:  # a second session
                assert {tool.name for tool in (await again.list_tools()).tools} == TOOLS


async def test_a_gateway_that_is_down_is_a_tool_error_not_a_crash(agent_env: dict[str, str]) -> None:
    env = {**agent_env, "PYTHONPATH": str(ROOT), "CONVOY_URL": f"http://127.0.0.1:{free_port()}"}
    env.pop("CONVOY_API_KEY", None)
    server = StdioServerParameters(
        command=sys.executable, args=["-c", _CONVOY, "mcp"], env=env, cwd=str(ROOT)
    )
    async with Client(server, read_timeout_seconds=60) as client:
        message = await refused(client, "create_sandbox", title="nowhere")
        assert "cannot reach the gateway" in message
        assert "not a conversation id" in await refused(client, "delete_sandbox", sandbox_id="x")


async def test_http_refuses_to_listen_beyond_loopback(agent_env: dict[str, str]) -> None:
    env = {**agent_env, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CONVOY,
        "mcp",
        "--http",
        "--host",
        "0.0.0.0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert stderr.decode().strip() == (
        "convoy: refusing to serve MCP on 0.0.0.0: it has no authentication; use 127.0.0.1"
    )
