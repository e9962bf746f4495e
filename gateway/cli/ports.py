"""``convoy port ID PORT``: a signed link to a server listening in the sandbox."""

from __future__ import annotations

import asyncio
import webbrowser
from typing import Annotated

import typer

from gateway.cli._render import print_json
from gateway.cli._state import JsonOption, run_async, state
from gateway.cli.conversations import open_conversation


def register(app: typer.Typer) -> None:
    @app.command()
    def port(
        ctx: typer.Context,
        conversation_id: Annotated[str, typer.Argument(metavar="ID")],
        port: Annotated[
            int, typer.Argument(min=1, max=65535, help="Port a server listens on in the sandbox.")
        ],
        expires_in: Annotated[
            int, typer.Option("--expires-in", min=1, help="Seconds the link works.")
        ] = 3600,
        open_it: Annotated[bool, typer.Option("--open", help="Open the link in a web browser.")] = False,
        json_output: JsonOption = False,
    ) -> None:
        """Print a signed link that opens PORT of the sandbox without a key (until it expires,
        or the conversation is deleted); --open opens it in a browser."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                link = await handle.port_link(port, expires_in=expires_in)
            if cli.json:
                print_json(link)
            else:
                print(link.url)
            if open_it and not await asyncio.to_thread(webbrowser.open, link.url):
                typer.echo("convoy: no web browser could be opened; the link is above", err=True)
            return 0

        run_async(go)
