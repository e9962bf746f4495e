"""How the ``convoy`` command line shows things: rich tables and progress bars on a terminal,
plain tab-separated lines when piped, JSON with ``--json``. Progress goes to stderr so stdout
stays clean for data."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from gateway.client._exceptions import ConvoyError, Forbidden, NotFound
from gateway.models import Conversation
from sandbox_agent.protocol import Event

T = TypeVar("T")


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def print_json(value: Any) -> None:
    """One JSON document (models as their wire form) on one line."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json()
    elif isinstance(value, list) and all(isinstance(item, BaseModel) for item in value):
        text = "[" + ",".join(item.model_dump_json() for item in value) + "]"
    else:
        text = json.dumps(value, default=str)
    print(text, flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal, tab-separated lines (no header) otherwise."""
    if not stdout_is_tty():
        for row in rows:
            print("\t".join(row))
        return
    table = Table(*headers, box=None, header_style="bold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def print_listing(
    items: Sequence[T], headers: Sequence[str], row: Callable[[T], Sequence[str]], as_json: bool
) -> None:
    """What ``ls`` prints: the items as one JSON list with ``--json``, else a table of ``row(item)``."""
    if as_json:
        print_json(list(items))
    else:
        print_table(headers, [row(item) for item in items])


def print_made(made: BaseModel, short: str, as_json: bool) -> None:
    """What a command that makes one thing prints: it as JSON with ``--json``, else ``short``
    (its id or name) alone, so a script can capture it."""
    if as_json:
        print_json(made)
    else:
        print(short, flush=True)


async def remove_each(
    names: Sequence[str],
    remove: Callable[[str], Awaitable[object]],
    as_json: bool,
    refused: Callable[[ConvoyError], bool],
) -> int:
    """What ``rm NAME...`` does: ``remove`` each in turn, printing each one removed (with
    ``--json``: one JSON list at the end). An error for which ``refused`` holds is reported on
    stderr and the next name tried; any other stops the command. Answers the exit code: 0 when
    every one was removed, else 1."""
    removed: list[str] = []
    for name in names:
        try:
            await remove(name)
        except ConvoyError as exc:
            if not refused(exc):
                raise
            typer.echo(f"convoy: {name}: {exc}", err=True)
        else:
            removed.append(name)
            if not as_json:
                print(name, flush=True)
    if as_json:
        print_json(removed)
    return 0 if len(removed) == len(names) else 1


def missing_or_foreign(error: ConvoyError) -> bool:
    """For :func:`remove_each`: a name that is not there (or not yours) is reported and the next
    one tried; anything else stops the command."""
    return isinstance(error, NotFound | Forbidden)


def conversation_row(info: Conversation) -> list[str]:
    return [
        str(info.id),
        info.status.value,
        info.owner,
        info.created_at.isoformat(timespec="seconds"),
        info.title,
    ]


def print_conversation(info: Conversation) -> None:
    fields = {
        "id": str(info.id),
        "status": info.status.value + (f" ({info.phase})" if info.phase else ""),
        "owner": info.owner,
        "title": info.title,
        "created": info.created_at.isoformat(timespec="seconds"),
        "idle timeout": f"{info.idle_timeout:g}s",
        "internet": "yes" if info.internet else "no",
    }
    if info.reason:
        fields["reason"] = info.reason
    limits = info.limits.model_dump(exclude_none=True)
    if limits:
        fields["limits"] = ", ".join(f"{k}={v}" for k, v in limits.items())
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        print(f"{name + ':':<{width + 1}} {value}")


def event_line(event: Event) -> str:
    """``seq type key=value ...``: one readable line per event."""
    detail = event.detail.model_dump(mode="json", exclude_none=True)
    kind = detail.pop("type", "?")
    parts = [f"{k}={v if isinstance(v, str | int | float) else json.dumps(v)}" for k, v in detail.items()]
    if kind == "TaskOutput":
        parts = [
            f"task_id={detail.get('task_id')}",
            f"stream={detail.get('stream')}",
            repr(detail.get("data")),
        ]
    return f"{event.seq}\t{kind}\t" + " ".join(parts)


@dataclass
class Meter:
    """Callbacks for a transfer: ``total(n)`` once, ``advance(n)`` per chunk. No-ops when hidden."""

    progress: Progress | None
    task: TaskID | None = None

    def describe(self, text: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=text)

    def total(self, size: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, total=size)

    def advance(self, size: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, size)


def transfer_meter(description: str, show: bool) -> contextlib.AbstractContextManager[Meter]:
    """A byte progress bar on stderr when ``show`` and stderr is a terminal."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return _meter(description, show, *columns)


def status_meter(description: str, show: bool) -> contextlib.AbstractContextManager[Meter]:
    """A spinner on stderr (for waiting on a sandbox); ``Meter.progress`` updates its text."""
    return _meter(description, show, SpinnerColumn(), TextColumn("{task.description}"))


@contextlib.contextmanager
def _meter(description: str, show: bool, *columns: ProgressColumn) -> Iterator[Meter]:
    """A transient progress display of ``columns`` on stderr; a silent one unless ``show`` and
    stderr is a terminal."""
    if not (show and stderr_is_tty()):
        yield Meter(None)
        return
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield Meter(progress, progress.add_task(description, total=None))
