"""Shared pieces of the ``convoy`` command line: global options, the error boundary, and running
a command's coroutine with Ctrl-C turned into cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from gateway.client._async import AsyncConvoyClient
    from gateway.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"

#: ``--json`` after a command (``convoy ls --json``) means what it means before it (``convoy --json ls``).
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def settings_from(**options: object) -> Settings:
    """The gateway's settings from the environment, overridden by the options given on the
    command line (``None``: not given). A bad value is a usage error (exit 2) naming it."""
    from pydantic import ValidationError

    from gateway.settings import Settings

    try:
        return Settings(**{name: value for name, value in options.items() if value is not None})  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        typer.echo(f"convoy: invalid setting {where}: {first['msg']}", err=True)
        raise typer.Exit(2) from None


@dataclass(frozen=True)
class CliState:
    """The global options, stored on the typer context."""

    url: str
    key: str | None
    json: bool

    def client(self) -> AsyncConvoyClient:
        from gateway.client._async import AsyncConvoyClient

        return AsyncConvoyClient(self.url, self.key)


def state(ctx: typer.Context, json_output: bool = False) -> CliState:
    """The global options, with the command's own ``--json`` (``json_output``) added to the global one."""
    obj: Any = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return dataclasses.replace(obj, json=True) if json_output else obj


def run_async(make: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run a command's coroutine and exit with the status it answers.

    The first SIGINT/SIGTERM cancels the coroutine (which cleans up, e.g. cancels a remote
    task) and the exit status is 128 + the signal number; a second one leaves at once. A closed
    stdout ends it like SIGPIPE would (141, no message).
    """
    received: list[int] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        assert current is not None

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1:
                current.cancel()
            else:
                os._exit(128 + signum)  # the user insists: no more cleanup

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await make()
        except asyncio.CancelledError:
            if received:
                return 128 + received[0]
            raise

    try:
        code = asyncio.run(main())
    except BrokenPipeError:  # stdout closed early (``convoy exec ... | head``): quiet, like SIGPIPE
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    raise typer.Exit(code)


def run_app(app: typer.Typer) -> None:
    """Run ``app``; a client error becomes one line on stderr and exit status 1, never a traceback."""
    from gateway.client._exceptions import ConvoyError, Unauthorized

    try:
        app()
    except Unauthorized as exc:
        hint = "" if "--key" in exc.message else " (give --key or set CONVOY_API_KEY)"
        print(f"convoy: unauthorized: {exc.message}{hint}", file=sys.stderr)
        sys.exit(1)
    except ConvoyError as exc:
        print(f"convoy: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # local files: a missing source, an unwritable destination
        print(f"convoy: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        sys.exit(1)
