"""``convoy create``, ``ls``, ``info``, ``rm``: conversations themselves."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import typer
from pydantic import ValidationError

from gateway.cli._render import (
    conversation_row,
    missing_or_foreign,
    print_conversation,
    print_json,
    print_listing,
    print_made,
    remove_each,
    status_meter,
)
from gateway.cli._state import CliState, JsonOption, run_async, state
from gateway.client._async import AsyncConvoyClient
from gateway.client._conversation import AsyncConversationHandle
from gateway.models import Conversation, ConversationLimits, OnIdle

TitleOption = Annotated[str, typer.Option("--title", "-t", help="A title for the conversation.")]
EnvOption = Annotated[
    list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the sandbox's tasks (repeatable).")
]
IdleOption = Annotated[
    float | None, typer.Option("--idle-timeout", help="Seconds idle before the gateway reaps it.")
]
InternetOption = Annotated[bool, typer.Option("--internet", help="Allow outbound internet access.")]
MemoryOption = Annotated[int | None, typer.Option("--memory", help="Memory limit in MiB.")]
CpusOption = Annotated[float | None, typer.Option("--cpus", help="CPU limit.")]
TemplateOption = Annotated[
    str | None, typer.Option("--template", help="The template to run (convoy template ls).")
]


class OnIdleChoice(enum.StrEnum):
    delete = "delete"
    pause = "pause"


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        env[name] = value
    return env


@contextlib.asynccontextmanager
async def open_conversation(cli: CliState, conversation_id: str) -> AsyncIterator[AsyncConversationHandle]:
    """A handle on an existing conversation, with a client that is closed on exit."""
    async with cli.client() as client:
        yield await client.open(conversation_id)


@dataclass(frozen=True)
class NewConversation:
    """What ``create`` and ``run`` ask of a new conversation (checked before anything is sent)."""

    title: str
    env: dict[str, str]
    idle_timeout: float | None
    internet: bool
    limits: ConversationLimits
    #: ``create --from-snapshot`` and ``--on-idle`` (see gateway.cli.lifecycle).
    snapshot: str | None = None
    on_idle: OnIdle | None = None
    template: str | None = None

    @classmethod
    def of(
        cls,
        title: str,
        env: list[str] | None,
        idle_timeout: float | None,
        internet: bool,
        memory: int | None,
        cpus: float | None,
        template: str | None = None,
    ) -> NewConversation:
        """From the command line's options (``memory`` in MiB); a bad ``--env``, ``--memory`` or
        ``--cpus`` is a usage error (exit status 2), found before anything is sent."""
        memory_bytes = memory * 1024 * 1024 if memory else None
        try:
            limits = ConversationLimits(memory_bytes=memory_bytes, cpus=cpus)
        except ValidationError as error:
            first = error.errors()[0]
            option = "--memory" if first["loc"][0] == "memory_bytes" else "--cpus"
            raise typer.BadParameter(first["msg"], param_hint=option) from None
        return cls(title, parse_env(env), idle_timeout, internet, limits, template=template)


async def create_conversation(
    cli: CliState, client: AsyncConvoyClient, new: NewConversation, *, wait: bool = True
) -> AsyncConversationHandle:
    """Create one, with a spinner showing the start-up phase on a terminal."""
    with status_meter("starting sandbox", show=not cli.json) as meter:

        def on_status(info: Conversation) -> None:
            phase = f": {info.phase}" if info.phase else ""
            meter.describe(f"{info.status.value.lower()}{phase}")

        return await client.create(
            title=new.title,
            env=new.env,
            limits=new.limits,
            idle_timeout=new.idle_timeout,
            internet=new.internet,
            on_idle=new.on_idle,
            snapshot=new.snapshot,
            template=new.template,
            wait=wait,
            on_status=on_status,
        )


def register(app: typer.Typer) -> None:
    @app.command()
    def create(
        ctx: typer.Context,
        title: TitleOption = "",
        env: EnvOption = None,
        idle_timeout: IdleOption = None,
        internet: InternetOption = False,
        memory: MemoryOption = None,
        cpus: CpusOption = None,
        template: TemplateOption = None,
        wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it is READY.")] = True,
        from_snapshot: Annotated[
            str | None, typer.Option("--from-snapshot", metavar="SNAPSHOT", help="Start with this workspace.")
        ] = None,
        on_idle: Annotated[
            OnIdleChoice | None, typer.Option("--on-idle", help="Once idle: delete it, or pause it.")
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        """Begin a conversation; prints its id once the sandbox is ready."""
        cli = state(ctx, json_output)
        new = NewConversation.of(title, env, idle_timeout, internet, memory, cpus, template)
        policy: OnIdle | None = None if on_idle is None else on_idle.value
        new = dataclasses.replace(new, snapshot=from_snapshot, on_idle=policy)

        async def go() -> int:
            async with cli.client() as client:
                handle = await create_conversation(cli, client, new, wait=wait)
            print_made(handle.info, str(handle.id), cli.json)
            return 0

        run_async(go)

    @app.command("ls")
    def list_conversations(ctx: typer.Context, json_output: JsonOption = False) -> None:
        """List conversations (admin; in local mode everyone is)."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with cli.client() as client:
                items = [info async for info in client.list()]
            print_listing(items, ["ID", "STATUS", "OWNER", "CREATED", "TITLE"], conversation_row, cli.json)
            return 0

        run_async(go)

    @app.command()
    def info(
        ctx: typer.Context,
        conversation_id: Annotated[str, typer.Argument(metavar="ID")],
        json_output: JsonOption = False,
    ) -> None:
        """Show one conversation."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with cli.client() as client:
                found = await client.get(conversation_id)
            print_json(found) if cli.json else print_conversation(found)
            return 0

        run_async(go)

    @app.command("rm")
    def remove(
        ctx: typer.Context,
        conversation_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
        json_output: JsonOption = False,
    ) -> None:
        """Finish conversations: their tasks stop, sandboxes and files are removed. Prints the ids
        removed (with --json: as one JSON list)."""
        cli = state(ctx, json_output)

        async def go() -> int:
            async with cli.client() as client:
                return await remove_each(conversation_ids, client.delete, cli.json, missing_or_foreign)

        run_async(go)
