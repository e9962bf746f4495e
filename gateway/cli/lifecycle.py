"""``convoy pause``, ``resume``, ``fork`` and ``snapshot create/ls/rm``."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli._render import print_conversation, print_json, print_table
from gateway.cli._state import JsonOption, run_async, state
from gateway.cli.conversations import open_conversation
from gateway.client._exceptions import Forbidden, NotFound
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
            print_json(forked.info) if cli.json else print(forked.id, flush=True)
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
            print_json(made) if cli.json else print(made.id, flush=True)
            return 0

        run_async(go)

    @snapshots.command("ls")
    def list_snapshots(ctx: typer.Context, json_output: JsonOption = False) -> None:
        """List your snapshots (an admin's: everyone's)."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with cli.client() as client:
                items = [item async for item in client.snapshots()]
            if cli.json:
                print_json(items)
            else:
                headers = ["ID", "NAME", "SIZE", "CREATED", "CONVERSATION"]
                print_table(headers, [_snapshot_row(item) for item in items])
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
            removed: list[str] = []
            async with cli.client() as client:
                for sid in snapshot_ids:
                    try:
                        await client.delete_snapshot(sid)
                    except (NotFound, Forbidden) as exc:
                        typer.echo(f"convoy: {sid}: {exc}", err=True)
                    else:
                        removed.append(sid)
                        if not cli.json:
                            print(sid, flush=True)
            if cli.json:
                print_json(removed)
            return 0 if len(removed) == len(snapshot_ids) else 1

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
