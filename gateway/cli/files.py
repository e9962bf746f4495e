"""``convoy upload``, ``download`` and ``files``: moving files in and out of a workspace."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli._render import print_json, print_table, stdout_is_tty, transfer_meter
from gateway.cli._state import JsonOption, run_async, state
from gateway.cli.conversations import open_conversation

IdArgument = Annotated[str, typer.Argument(metavar="ID")]


def register(app: typer.Typer) -> None:
    @app.command()
    def upload(
        ctx: typer.Context,
        conversation_id: IdArgument,
        paths: Annotated[
            list[str],
            typer.Argument(metavar="SRC... DEST", help="Local files/directories, then a workspace dir."),
        ],
        no_overwrite: Annotated[
            bool, typer.Option("--no-overwrite", help="Fail instead of replacing existing files.")
        ] = False,
        json_output: JsonOption = False,
    ) -> None:
        """Upload local files and directories (cp -r style) into a workspace directory ("" or . = root)."""
        if len(paths) < 2:
            raise typer.BadParameter("give at least one SRC and a DEST", param_hint="SRC... DEST")
        cli = state(ctx, json_output)
        *sources, dest = paths

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                with transfer_meter("uploading", show=not cli.json) as meter:
                    written = await handle.files.upload(
                        sources,
                        "" if dest in (".", "/") else dest,
                        overwrite=not no_overwrite,
                        progress=meter.advance,
                        on_total=meter.total,
                    )
            if cli.json:
                print_json(written)
            else:
                for info in written:
                    print(info.path)
            return 0

        run_async(go)

    @app.command()
    def download(
        ctx: typer.Context,
        conversation_id: IdArgument,
        src: Annotated[str, typer.Argument(help="Workspace file or directory.")],
        dest: Annotated[str, typer.Argument(help="Local destination (into it, if a directory).")],
        json_output: JsonOption = False,
    ) -> None:
        """Download a workspace file or directory (cp -r style)."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                with transfer_meter("downloading", show=not cli.json) as meter:
                    written = await handle.files.download(
                        "" if src in (".", "/") else src, dest, progress=meter.advance, on_total=meter.total
                    )
            if cli.json:
                print_json([str(path) for path in written])
            else:
                for path in written:
                    print(path)
            return 0

        run_async(go)

    @app.command()
    def files(
        ctx: typer.Context,
        conversation_id: IdArgument,
        pattern: Annotated[str | None, typer.Argument(help="Glob pattern, e.g. '*.py'.")] = None,
        under: Annotated[str | None, typer.Option("--path", help="Only under this directory.")] = None,
        contains: Annotated[str | None, typer.Option("-q", help="Name contains this text.")] = None,
        json_output: JsonOption = False,
    ) -> None:
        """List workspace files (all of them, or those matching PATTERN)."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                found = [info async for info in handle.files.search(pattern, q=contains, path=under)]
            if cli.json:
                print_json(found)
            elif stdout_is_tty():
                rows = [
                    [
                        f"{f.path}/" if f.is_dir else f.path,
                        "-" if f.is_dir else str(f.size),
                        f"{f.modified:%F %T}",
                    ]
                    for f in found
                ]
                print_table(["PATH", "SIZE", "MODIFIED"], rows)
            else:
                for info in found:
                    print(f"{info.path}/" if info.is_dir else info.path)
            return 0

        run_async(go)
