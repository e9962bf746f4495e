"""``convoy shell ID``: an interactive terminal in the sandbox, in the user's own terminal.

The local terminal is put in raw mode (every key goes to the sandbox, Ctrl-C and Ctrl-D
included) and restored on the way out, whatever happens; a local resize (SIGWINCH) resizes
the PTY. The command ends when the remote program does - Ctrl-D at an empty shell prompt,
``exit`` - with its exit status (128+N for a signal). A dropped connection is resumed at the
last byte received (nothing lost, nothing twice). The terminal is deleted afterwards unless
``--keep``; ``--attach TID`` views an existing one (and keeps it). Local input that is not a
terminal (a pipe, a file) is forwarded as it is, then a Ctrl-D at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Annotated

import typer

from gateway.cli._state import run_async, state
from gateway.cli._stdin import local_chunks
from gateway.cli.conversations import open_conversation
from gateway.client._exceptions import ConvoyError, GatewayUnavailable
from gateway.client._terminals import AsyncTerminal
from sandbox_agent.race import race

#: Ctrl-D: what ends a shell reading from a terminal.
END_OF_INPUT = b"\x04"
#: Attempts to resume a dropped connection before giving up.
RECONNECTS = 5


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode, restored on exit (a non-terminal is left alone)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def local_size(fd: int) -> tuple[int, int]:
    """``(cols, rows)`` of the terminal on ``fd``; 80x24 when it is none."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


async def _output(terminal: AsyncTerminal, out_fd: int) -> None:
    """Writes the terminal's output until it exits, resuming dropped connections."""
    failures, connected = 0, True
    while True:
        if connected:
            while data := await terminal.recv():
                os.write(out_fd, data)
                failures = 0
            if terminal.exit is not None:
                return
        failures += 1
        if failures > RECONNECTS:
            raise GatewayUnavailable("lost the terminal's connection and could not resume it")
        await asyncio.sleep(0.2 * failures)
        try:
            await terminal.connect()
            connected = True
        except GatewayUnavailable:
            connected = False


async def _input(terminal: AsyncTerminal, in_fd: int) -> None:
    async for data in local_chunks(in_fd):
        with contextlib.suppress(ConvoyError, RuntimeError):  # reconnecting: keys meanwhile are lost
            await terminal.send(data or END_OF_INPUT)
    await asyncio.Event().wait()  # local input ended: wait for the remote program to end


async def _resizes(terminal: AsyncTerminal, fd: int, changed: asyncio.Event) -> None:
    while True:
        await changed.wait()
        changed.clear()
        cols, rows = local_size(fd)
        with contextlib.suppress(ConvoyError, RuntimeError):
            await terminal.resize(cols, rows)


async def interact(terminal: AsyncTerminal, in_fd: int = 0, out_fd: int = 1) -> int:
    """Connect ``terminal`` to the local terminal until the remote program ends; its exit status."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    with raw_mode(in_fd):
        if os.isatty(in_fd):
            loop.add_signal_handler(signal.SIGWINCH, changed.set)
        try:
            outcome, _, _ = await race(
                _output(terminal, out_fd), _input(terminal, in_fd), _resizes(terminal, in_fd, changed)
            )
        finally:
            loop.remove_signal_handler(signal.SIGWINCH)
    if isinstance(outcome, BaseException):
        raise outcome
    code = terminal.exit_code
    if code is None:
        return 1
    return 128 - code if code < 0 else code


def register(app: typer.Typer) -> None:
    @app.command("shell")
    def shell_command(
        ctx: typer.Context,
        conversation_id: Annotated[str, typer.Argument(metavar="ID")],
        command: Annotated[
            str | None,
            typer.Option("--command", "-c", help="Run this command line instead of the login shell."),
        ] = None,
        attach: Annotated[
            str | None,
            typer.Option("--attach", help="View an existing terminal (its output from the start)."),
        ] = None,
        keep: Annotated[bool, typer.Option("--keep", help="Leave the terminal running afterwards.")] = False,
    ) -> None:
        """An interactive terminal in a conversation's sandbox (Ctrl-D or exit ends it)."""
        cli = state(ctx)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                cols, rows = local_size(sys.stdin.fileno())
                if attach:
                    terminal = await handle.terminal(attach)
                else:
                    terminal = await handle.open_terminal(cols=cols, rows=rows, command=command)
                try:
                    await terminal.connect()
                    if attach:
                        await terminal.resize(cols, rows)
                    return await interact(terminal, sys.stdin.fileno(), sys.stdout.fileno())
                finally:
                    await terminal.close()
                    if not (keep or attach):
                        with contextlib.suppress(ConvoyError):
                            await asyncio.shield(terminal.delete())

        run_async(go)
