"""``convoy template build``, ``ls``, ``rm``: the images a conversation can run (``create --template``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli._render import print_json, print_table
from gateway.cli._state import JsonOption, run_async, state
from gateway.models import TemplateInfo

template_app = typer.Typer(
    help="Templates: the images a conversation's sandbox can run.", no_args_is_help=True
)


def _size(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.0f} MB"


def _row(template: TemplateInfo) -> list[str]:
    created = template.created_at.strftime("%Y-%m-%d %H:%M") if template.created_at else "-"
    return [template.name, template.built_from, created, _size(template.size), template.description]


@template_app.command("build")
def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The template's name (lower case).")],
    from_image: Annotated[str | None, typer.Option("--from", help="A local image to build it from.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A Dockerfile to build it from.")] = None,
    context: Annotated[
        Path | None, typer.Option("--context", help="The Dockerfile's build context (default: its folder).")
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What it holds.")] = "",
    json_output: JsonOption = False,
) -> None:
    """Build (or rebuild) a template from an image (--from) or a Dockerfile (--file; admin).
    The build's output goes to stderr; the template's name is printed when it is ready."""
    if (from_image is None) == (file is None):
        raise typer.BadParameter("give one of --from IMAGE and --file DOCKERFILE", param_hint="--from/--file")
    if context is not None and file is None:
        raise typer.BadParameter("--context goes with --file", param_hint="--context")
    cli = state(ctx, json_output)

    def show(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async def go() -> int:
        async with cli.client() as client:
            made = await client.build_template(
                name, from_image=from_image, dockerfile=file, context=context, description=description,
                on_progress=None if cli.json else show,
            )  # fmt: skip
        print_json(made) if cli.json else print(made.name, flush=True)
        return 0

    run_async(go)


@template_app.command("ls")
def list_templates(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the templates, the default first."""
    cli = state(ctx, json_output)

    async def go() -> int:
        async with cli.client() as client:
            found = await client.templates()
        if cli.json:
            print_json(found)
        else:
            print_table(["NAME", "FROM", "CREATED", "SIZE", "DESCRIPTION"], [_row(t) for t in found])
        return 0

    run_async(go)


@template_app.command("rm")
def remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...")],
    json_output: JsonOption = False,
) -> None:
    """Remove templates (admin); refused for one that conversations still run."""
    from gateway.client._exceptions import ConvoyError

    cli = state(ctx, json_output)

    async def go() -> int:
        removed: list[str] = []
        async with cli.client() as client:
            for name in names:
                try:
                    await client.remove_template(name)
                except ConvoyError as exc:
                    if exc.status_code is None:
                        raise  # the gateway is unreachable: no use trying the others
                    typer.echo(f"convoy: {name}: {exc}", err=True)
                else:
                    removed.append(name)
                    if not cli.json:
                        print(name, flush=True)
        if cli.json:
            print_json(removed)
        return 0 if len(removed) == len(names) else 1

    run_async(go)


def register(app: typer.Typer) -> None:
    app.add_typer(template_app, name="template")
