"""``convoy pause``, ``resume``, ``fork`` and ``snapshot create/ls/rm``."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli._render import (
    missing_or_foreign,
    print_conversation,
    print_json,
    print_listing,
    print_made,
    remove_each,
)
from gateway.cli._state import JsonOption, run_async, state
from gateway.cli.conversations import open_conversation
from gateway.models import Snapshot

IdArgument = Annotated[str, typer.Argument(metavar="ID")]


def _snapshot_row(snapshot: Snapshot) -> list[str]:
    return [
        str(snapshot.id),
        snapshot.name,
        str(snapshot.size),
        snapshot.created_at.isoformat(timespec="seconds"),
        str(snapshot.conversation_id),
    ]


def register(app: typer.Typer) -> None:
    for action in ("pause", "resume"):
        _register_freezer(app, action)

    @app.command()
    def fork(
        ctx: typer.Context,
        conversation_id: IdArgument,
        title: Annotated[str | None, typer.Option("--title", "-t", help="Default: '<title> (fork)'.")] = None,
        json_output: JsonOption = False,
    ) -> None:
        """A new conversation with a copy of this one's workspace (not its processes); prints its id."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                forked = await handle.fork(title)
            print_made(forked.info, str(forked.id), cli.json)
            return 0

        run_async(go)

    snapshots = typer.Typer(help="Saved copies of a workspace.", no_args_is_help=True)
    app.add_typer(snapshots, name="snapshot")

    @snapshots.command("create")
    def create(
        ctx: typer.Context,
        conversation_id: IdArgument,
        name: Annotated[str, typer.Option("--name", "-n", help="A name for the snapshot.")] = "",
        json_output: JsonOption = False,
    ) -> None:
        """Save a copy of a conversation's workspace; prints the snapshot's id."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                made = await handle.snapshot(name)
            print_made(made, str(made.id), cli.json)
            return 0

        run_async(go)

    @snapshots.command("ls")
    def list_snapshots(ctx: typer.Context, json_output: JsonOption = False) -> None:
        """List your snapshots (an admin's: everyone's)."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with cli.client() as client:
                items = [item async for item in client.snapshots()]
            print_listing(items, ["ID", "NAME", "SIZE", "CREATED", "CONVERSATION"], _snapshot_row, cli.json)
            return 0

        run_async(go)

    @snapshots.command("rm")
    def remove(
        ctx: typer.Context,
        snapshot_ids: Annotated[list[str], typer.Argument(metavar="SNAPSHOT...")],
        json_output: JsonOption = False,
    ) -> None:
        """Delete snapshots; prints the ids removed."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with cli.client() as client:
                return await remove_each(snapshot_ids, client.delete_snapshot, cli.json, missing_or_foreign)

        run_async(go)


def _register_freezer(app: typer.Typer, action: str) -> None:
    def command(ctx: typer.Context, conversation_id: IdArgument, json_output: JsonOption = False) -> None:
        cli = state(ctx, json_output)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                info = await (handle.pause() if action == "pause" else handle.resume())
            print_json(info) if cli.json else print_conversation(info)
            return 0

        run_async(go)

    command.__doc__ = (
        "Freeze a conversation's sandbox (its processes stop, memory kept); any request resumes it."
        if action == "pause"
        else "Resume a paused conversation."
    )
    app.command(action)(command)
