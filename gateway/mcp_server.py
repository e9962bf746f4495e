"""``convoy mcp``: a Model Context Protocol server that gives agents convoy sandboxes.

Built on the official SDK (``mcp``, 2.x: :class:`mcp.server.mcpserver.MCPServer`) and
the project's own asyncio client (:class:`gateway.client.AsyncConvoyClient`), it talks
to one gateway (``CONVOY_URL``) with one key (``CONVOY_API_KEY``). A sandbox is a
conversation; its id is the conversation's id.

Tools: ``create_sandbox``, ``run_command``, ``write_file``, ``read_file``,
``list_files``, ``delete_sandbox``. Resource template: ``convoy://sandbox/{sandbox_id}/file/{path}``,
a workspace file's text.

Every failure the gateway reports (unknown sandbox, bad path, limits, the gateway
down) is an MCP tool error whose text is the gateway's message
(:func:`_gateway_errors`); the server itself keeps serving. Each call uses its own
short-lived client: nothing is shared between MCP sessions but the URL and key.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field

from gateway import __version__
from gateway.client import AsyncConversationHandle, AsyncConvoyClient, ConvoyError

#: The largest file ``read_file`` returns (it is text for a model to read).
MAX_READ_BYTES = 1024 * 1024
#: The most entries ``list_files`` returns.
MAX_LISTED = 1000

_INSTRUCTIONS = """Sandboxes from a convoy gateway: each is an isolated workspace with a shell.
Create one with create_sandbox, run commands in it with run_command, move text in and out with
write_file / read_file, see its files with list_files, and delete_sandbox when done."""


@contextlib.asynccontextmanager
async def _gateway_errors() -> AsyncIterator[None]:
    """A :class:`ConvoyError` (or an unreachable gateway) as a tool error with its message."""
    try:
        yield
    except ConvoyError as error:
        raise ToolError(str(error)) from None
    except OSError as error:
        raise ToolError(f"the gateway could not be reached: {error}") from None


def _fits_read(data: bytes, path: str) -> str:
    if len(data) > MAX_READ_BYTES:
        raise ToolError(f"{path} is {len(data)} bytes; read_file returns at most {MAX_READ_BYTES}")
    return data.decode("utf-8", errors="replace")


def _write_local(folder: str, name: str, content: str) -> Path:
    local = Path(folder) / name
    local.write_text(content, encoding="utf-8")
    return local


def build_server(url: str, api_key: str | None, *, timeout: float = 60.0) -> MCPServer:
    """The MCP server for the gateway at ``url`` (see the module docstring)."""
    server: MCPServer = MCPServer(
        "convoy",
        title="convoy sandboxes",
        instructions=_INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",  # on stderr; INFO would log every request the client makes
    )

    def gateway() -> AsyncConvoyClient:
        return AsyncConvoyClient(url, api_key, timeout)

    async def sandbox(client: AsyncConvoyClient, sandbox_id: str) -> AsyncConversationHandle:
        return await client.open(sandbox_id.strip())

    @server.tool(description="Create a sandbox and wait until it is ready; answers its id.")
    async def create_sandbox(
        title: Annotated[str, Field(max_length=200, description="A name for people to recognise it.")] = "",
        template: Annotated[
            str | None, Field(description="A template name, where the gateway has them.")
        ] = None,
        internet: Annotated[bool, Field(description="Allow outbound internet connections.")] = False,
    ) -> dict[str, Any]:
        if template:
            raise ToolError(f"this gateway offers no templates (asked for {template!r}); leave template out")
        async with _gateway_errors(), gateway() as client:
            handle = await client.create(title=title, internet=internet)
            return {"sandbox_id": str(handle.id), "status": handle.status.value, "title": handle.info.title}

    @server.tool(description="Run a shell command (sh -c) in the sandbox's workspace to its end.")
    async def run_command(
        sandbox_id: str,
        command: Annotated[str, Field(min_length=1)],
        # The command's own limit, enforced in the sandbox (the tool's argument name is the issue's).
        timeout: Annotated[  # noqa: ASYNC109
            float | None, Field(gt=0, description="Seconds before the command is stopped.")
        ] = 120.0,
    ) -> dict[str, Any]:
        async with _gateway_errors(), gateway() as client:
            result = await (await sandbox(client, sandbox_id)).run(command, timeout=timeout)
            return {
                "exit_code": result.exit_code,
                "stdout": result.stdout,
                "stderr": result.stderr,
                "status": result.status.value,
                "error": result.error,
                "truncated": result.truncated is not None,
            }

    @server.tool(description="Write text to a file of the sandbox's workspace (parents are made).")
    async def write_file(sandbox_id: str, path: str, content: str) -> dict[str, Any]:
        parent, name = posixpath.split(path.strip().strip("/"))
        if not name:
            raise ToolError(f"{path!r} names no file")
        async with _gateway_errors(), gateway() as client:
            handle = await sandbox(client, sandbox_id)
            with tempfile.TemporaryDirectory(prefix="convoy-mcp-") as folder:
                local = await asyncio.to_thread(_write_local, folder, name, content)
                written = await handle.files.upload([local], parent)
            return {"path": written[0].path, "size": written[0].size}

    @server.tool(description="Read a text file of the sandbox's workspace (at most 1 MiB).")
    async def read_file(sandbox_id: str, path: str) -> str:
        async with _gateway_errors(), gateway() as client:
            handle = await sandbox(client, sandbox_id)
            return _fits_read(await handle.files.read_bytes(path), path)

    @server.tool(description="List the workspace's files and directories matching a glob pattern.")
    async def list_files(
        sandbox_id: str,
        pattern: Annotated[str | None, Field(description="A glob such as *.py; all when left out.")] = None,
    ) -> list[dict[str, Any]]:
        async with _gateway_errors(), gateway() as client:
            handle = await sandbox(client, sandbox_id)
            found: list[dict[str, Any]] = []
            async for info in handle.files.search(pattern or None):
                found.append({"path": info.path, "size": info.size, "is_dir": info.is_dir})
                if len(found) >= MAX_LISTED:
                    break
            return found

    @server.tool(description="Delete a sandbox: its processes stop and its files are gone.")
    async def delete_sandbox(sandbox_id: str) -> dict[str, Any]:
        async with _gateway_errors(), gateway() as client:
            await (await sandbox(client, sandbox_id)).delete()
            return {"deleted": sandbox_id.strip()}

    @server.resource(
        "convoy://sandbox/{sandbox_id}/file/{path}",
        name="sandbox file",
        description="A text file of a sandbox's workspace.",
        mime_type="text/plain",
    )
    async def sandbox_file(sandbox_id: str, path: str) -> str:
        try:
            async with gateway() as client:
                return _fits_read(await (await sandbox(client, sandbox_id)).files.read_bytes(path), path)
        except (ConvoyError, OSError, ToolError) as error:
            raise ResourceError(str(error)) from None

    return server


def serve_stdio(url: str, api_key: str | None) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    build_server(url, api_key).run("stdio")


def serve_http(url: str, api_key: str | None, host: str, port: int) -> None:
    """Serve MCP over streamable HTTP at ``http://host:port/mcp``."""
    build_server(url, api_key).run("streamable-http", host=host, port=port)
