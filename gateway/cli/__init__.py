"""The ``convoy`` command line: ``convoy serve`` runs the gateway; the other commands drive one.

Global options ``--url`` (``CONVOY_URL``) and ``--key`` (``CONVOY_API_KEY``) say which gateway and
which key; ``--json`` (machine-readable output) goes before the command or after it. Every
failure ends as one line on stderr and a non-zero exit, never a traceback.
Imports of the server and the client are lazy so ``convoy --help`` starts fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli._state import DEFAULT_URL, CliState, settings_from

app = typer.Typer(
    name="convoy",
    help="One container per conversation: run the gateway, or drive one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="CONVOY_URL", help="Gateway base URL.")] = DEFAULT_URL,
    key: Annotated[
        str | None, typer.Option(envvar="CONVOY_API_KEY", help="API key (Bearer).", show_default=False)
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
) -> None:
    ctx.obj = CliState(url=url, key=key or None, json=json_output)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (env CONVOY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (env CONVOY_PORT).")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="auto|process|docker|kubernetes|memory (env CONVOY_RUNTIME); auto = Docker if one answers."
        ),
    ] = None,
) -> None:
    """Run the gateway. Options override the CONVOY_* environment."""
    settings = settings_from(host=host, port=port, runtime=runtime)
    from gateway.server import run_server

    run_server(settings)


def _register_client_commands() -> None:
    """The commands that talk to a gateway live in their own modules, one group each."""
    from gateway.cli import commands

    commands.register(app)


_register_client_commands()


def main() -> None:
    """Console-script entry point."""
    from gateway.cli._state import run_app

    run_app(app)


if __name__ == "__main__":
    main()
