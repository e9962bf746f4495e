"""``convoy template build``, ``ls``, ``rm``: the images a conversation can run (``create --template``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli._render import print_listing, print_made, remove_each
from gateway.cli._state import JsonOption, run_async, state
from gateway.client._exceptions import ConvoyError
from gateway.models import TemplateInfo

template_app = typer.Typer(
    help="Templates: the images a conversation's sandbox can run.", no_args_is_help=True
)


def _size(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.0f} MB"


def _row(template: TemplateInfo) -> list[str]:
    created = template.created_at.strftime("%Y-%m-%d %H:%M") if template.created_at else "-"
    return [template.name, template.built_from, created, _size(template.size), template.description]


def _answered(error: ConvoyError) -> bool:
    """Any answer of the gateway is per name; an unreachable gateway (no status) stops the command:
    no use trying the others."""
    return error.status_code is not None


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
        print_made(made, made.name, cli.json)
        return 0

    run_async(go)


@template_app.command("ls")
def list_templates(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the templates, the default first."""
    cli = state(ctx, json_output)

    async def go() -> int:
        async with cli.client() as client:
            found = await client.templates()
        print_listing(found, ["NAME", "FROM", "CREATED", "SIZE", "DESCRIPTION"], _row, cli.json)
        return 0

    run_async(go)


@template_app.command("rm")
def remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...")],
    json_output: JsonOption = False,
) -> None:
    """Remove templates (admin); refused for one that conversations still run."""
    cli = state(ctx, json_output)

    async def go() -> int:
        async with cli.client() as client:
            return await remove_each(names, client.remove_template, cli.json, _answered)

    run_async(go)


def register(app: typer.Typer) -> None:
    app.add_typer(template_app, name="template")
