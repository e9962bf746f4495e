"""``convoy exec``, ``run`` and ``events``: running commands in a sandbox and watching what happens.

``exec`` streams the task's stdout and stderr to ours as they arrive and exits with the task's
exit code; with ``-i`` our stdin is streamed to the task's as it comes, and its end closes the
task's stdin (the task reads EOF). The first Ctrl-C (or SIGTERM) cancels the remote task,
waits for it to end and exits 128 + the signal number.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Annotated

import typer

from gateway.cli._render import event_line, print_json, transfer_meter
from gateway.cli._state import JsonOption, run_async, state
from gateway.cli._stdin import local_chunks
from gateway.cli.conversations import (
    CpusOption,
    EnvOption,
    IdleOption,
    InternetOption,
    MemoryOption,
    NewConversation,
    TemplateOption,
    TitleOption,
    create_conversation,
    open_conversation,
    parse_env,
)
from gateway.client._conversation import AsyncConversationHandle
from gateway.client._exceptions import Conflict
from gateway.client._runnables import shell
from gateway.client._tasks import AsyncTaskRun, TaskResult
from sandbox_agent.protocol import OutputTruncated, Runnable, TaskOutput, TaskStatus

CommandArgument = Annotated[
    list[str],
    typer.Argument(
        metavar="CMD [ARGS]...",
        help="After --: an argv; a single argument is a shell command line (sh -c).",
        show_default=False,
    ),
]


def as_command(args: list[str]) -> str | list[str]:
    """One argument is a shell command line (``convoy exec ID -- 'make && make test'``);
    several are an argv."""
    return args[0] if len(args) == 1 else args


CwdOption = Annotated[str, typer.Option("--cwd", "-w", help="Working directory in the workspace.")]
TimeoutOption = Annotated[float | None, typer.Option("--timeout", help="Seconds before the task is ended.")]

#: How long an interrupted ``exec`` waits for the sandbox to confirm the cancellation.
CANCEL_WAIT = 30.0


def exit_status(result: TaskResult) -> int:
    """The shell convention: the exit code, 128+N for a signal, 130 for a cancelled task. Why a
    task failed is printed when the exit code alone does not say it (could not start, timed out)."""
    code, error = result.exit_code, result.error
    if result.status is TaskStatus.CANCELLED:
        return 130
    if error and error != f"exited with code {code}":
        print(f"convoy: the task failed: {error}", file=sys.stderr, flush=True)
    if code is None:
        return 1 if result.status is TaskStatus.ERROR else 0
    return 128 - code if code < 0 else code


async def _stream(run: AsyncTaskRun) -> int:
    async for event in run.events():
        detail = event.detail
        if isinstance(detail, TaskOutput):
            target = sys.stdout if detail.stream == "stdout" else sys.stderr
            target.write(detail.data)
            target.flush()
        elif isinstance(detail, OutputTruncated):
            print(
                f"convoy: output passed {detail.limit_bytes} bytes; the rest is in {detail.path}",
                file=sys.stderr,
                flush=True,
            )
    return exit_status(await run.wait())


async def _cancel(run: AsyncTaskRun) -> None:
    """Cancel the remote task and wait (bounded) until the sandbox says it has ended."""
    with contextlib.suppress(Exception):
        await run.cancel()
        await asyncio.wait_for(run.wait(), CANCEL_WAIT)
    with contextlib.suppress(Exception):
        await run.close()
    with contextlib.suppress(OSError):
        print(f"convoy: task {run.id} cancelled", file=sys.stderr, flush=True)


async def _feed_stdin(run: AsyncTaskRun) -> None:
    """Our stdin to the task's, chunk by chunk as it comes; its end closes the task's stdin."""
    with contextlib.suppress(Conflict):  # the task ended or closed its stdin: the rest is not wanted
        async for data in local_chunks(sys.stdin.fileno()):
            await run.write_stdin(data, eof=not data)


async def execute(handle: AsyncConversationHandle, runnable: Runnable, feed_stdin: bool = False) -> int:
    """Start ``runnable``, stream its output (and our stdin to it, with ``feed_stdin``), answer
    its exit status; on cancellation (Ctrl-C) cancel the remote task before re-raising."""
    # One request runs it and streams its result (?wait=true); Ctrl-C still cancels it.
    starting = asyncio.ensure_future(handle.start_streaming(runnable, title="convoy exec"))
    try:
        run = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # Interrupted while the task was being created: it may exist anyway.
        with contextlib.suppress(Exception):
            await _cancel(await asyncio.wait_for(starting, CANCEL_WAIT))
        raise
    feeder = asyncio.ensure_future(_feed_stdin(run)) if feed_stdin else None
    try:
        return await _stream(run)
    except BaseException:  # Ctrl-C, a closed stdout, a lost gateway: never leave it running
        if not run.done:
            await _cancel(run)
        raise
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
        await run.close()


def register(app: typer.Typer) -> None:
    @app.command("exec")
    def exec_command(
        ctx: typer.Context,
        conversation_id: Annotated[str, typer.Argument(metavar="ID")],
        command: CommandArgument,
        cwd: CwdOption = ".",
        env: EnvOption = None,
        timeout: TimeoutOption = None,
        interactive: Annotated[
            bool,
            typer.Option("--interactive", "-i", help="Stream our stdin to the command's (EOF closes it)."),
        ] = False,
        json_output: JsonOption = False,
    ) -> None:
        """Run a command in a conversation's sandbox, streaming its output; exits with its exit code."""
        cli = state(ctx, json_output)
        runnable = shell(as_command(command), cwd=cwd, env=parse_env(env), timeout=timeout, stdin=interactive)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                return await execute(handle, runnable, feed_stdin=interactive)

        run_async(go)

    @app.command("run")
    def run_command(
        ctx: typer.Context,
        command: CommandArgument,
        upload: Annotated[
            list[str] | None,
            typer.Option("--upload", "-u", help="Local file or directory to upload first (repeatable)."),
        ] = None,
        cwd: CwdOption = ".",
        env: EnvOption = None,
        timeout: TimeoutOption = None,
        title: TitleOption = "convoy run",
        idle_timeout: IdleOption = None,
        internet: InternetOption = False,
        memory: MemoryOption = None,
        cpus: CpusOption = None,
        template: TemplateOption = None,
        json_output: JsonOption = False,
    ) -> None:
        """Create a conversation, run one command in it, delete it; exits with the command's exit code."""
        cli = state(ctx, json_output)
        runnable = shell(as_command(command), cwd=cwd, timeout=timeout)
        new = NewConversation.of(title, env, idle_timeout, internet, memory, cpus, template)

        async def go() -> int:
            async with cli.client() as client:
                handle = await create_conversation(cli, client, new)
                try:
                    if upload:
                        with transfer_meter("uploading", show=not cli.json) as meter:
                            await handle.files.upload(upload, progress=meter.advance, on_total=meter.total)
                    return await execute(handle, runnable)
                finally:
                    await asyncio.shield(handle.delete(missing_ok=True))

        run_async(go)

    @app.command("events")
    def events_command(
        ctx: typer.Context,
        conversation_id: Annotated[str, typer.Argument(metavar="ID")],
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep following live events.")] = False,
        after_seq: Annotated[
            int, typer.Option("--after-seq", help="Only events after this seq (-1 with --follow: live only).")
        ] = 0,
        types: Annotated[
            list[str] | None, typer.Option("--type", help="Only this event type (repeatable).")
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        """Print a conversation's events, one per line (JSON lines with --json)."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with open_conversation(cli, conversation_id) as handle:
                stream = (
                    handle.follow(after_seq) if follow else handle.events(after_seq=after_seq, types=types)
                )
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        if types and event.detail.type not in types:
                            continue
                        print_json(event) if cli.json else print(event_line(event), flush=True)
            return 0

        run_async(go)
