"""``convoy mcp``: serve the Model Context Protocol for the gateway at ``--url`` / ``CONVOY_URL``
with ``--key`` / ``CONVOY_API_KEY`` (see :mod:`gateway.mcp_server`): over stdio by default (an
MCP client starts ``convoy mcp`` itself), or over streamable HTTP with ``--http``."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.addresses import is_loopback
from gateway.cli._state import state


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)


def mcp(
    ctx: typer.Context,
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")
    ] = False,
    host: Annotated[str, typer.Option(help="With --http: the address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="With --http: the port.")] = 8765,
) -> None:
    """Run an MCP server whose tools create sandboxes, run commands and move files in them."""
    options = state(ctx)
    if http and not is_loopback(host):
        # The MCP endpoint asks nothing of its callers and acts with this key: loopback only.
        typer.echo(
            f"convoy: refusing to serve MCP on {host}: it has no authentication; use 127.0.0.1", err=True
        )
        raise typer.Exit(2)
    try:
        from gateway import mcp_server
    except ImportError as error:  # the cli extra brings the SDK
        typer.echo(f"convoy: the MCP SDK is missing ({error}): pip install 'convoy[cli]'", err=True)
        raise typer.Exit(2) from None
    if http:
        mcp_server.serve_http(options.url, options.key, host, port)
    else:
        mcp_server.serve_stdio(options.url, options.key)
