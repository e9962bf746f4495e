"""``?watch=true``: a chunked stream of newline-delimited watch events.

From ``resourceVersion`` N the stream replays every later event, then follows
live ones; with none (or "0") it starts with a synthetic ADDED per current
object. A version older than the store's history gives one ERROR event
carrying a 410 Expired ``Status`` and ends the stream, as a real server does.
``allowWatchBookmarks`` adds a BOOKMARK (kind and resourceVersion only) every
``bookmark_interval`` seconds; ``timeoutSeconds`` ends the stream.
With a label or field selector, an object that leaves (enters) the selection
is sent as DELETED (ADDED).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fake_kube.resources import Resource
from fake_kube.status import ApiError
from fake_kube.store import Event, Obj, Store


@dataclass
class WatchRequest:
    resource: Resource
    namespace: str | None
    match: Callable[[Obj], bool]
    resource_version: str | None
    timeout: float | None
    bookmarks: bool


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _bookmark(resource: Resource, version: int) -> bytes:
    return _line(
        "BOOKMARK",
        {
            "kind": resource.kind,
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(version)},
        },
    )


def _translate(event: Event, watch: WatchRequest) -> bytes | None:
    """The line a watcher with ``watch``'s selection sees for ``event``, or None."""
    if event.resource != watch.resource or watch.namespace not in (None, event.namespace):
        return None
    now_matches = watch.match(event.object)
    if event.type == "MODIFIED" and event.previous is not None:
        was = watch.match(event.previous)
        if was and not now_matches:
            return _line("DELETED", event.object)
        if now_matches and not was:
            return _line("ADDED", event.object)
    return _line(event.type, event.object) if now_matches else None


async def stream(
    store: Store, watch: WatchRequest, stopping: Callable[[], bool], bookmark_interval: float
) -> AsyncIterator[bytes]:
    """The body of a watch response (see the module's docstring)."""
    if stopping():
        return
    queue = store.subscribe()  # before the backlog is read, so nothing falls in between
    try:
        sent = store.version
        if watch.resource_version in (None, "", "0"):
            for obj in store.select(watch.resource, watch.namespace, watch.match):
                yield _line("ADDED", obj)
        else:
            try:
                backlog = store.events_since(int(watch.resource_version))
            except ApiError as error:
                yield _line("ERROR", error.status())
                return
            for event in backlog:
                if (line := _translate(event, watch)) is not None:
                    yield line
        deadline = None if watch.timeout is None else time.monotonic() + watch.timeout
        next_bookmark = time.monotonic() + bookmark_interval
        while not stopping():
            wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if wait <= 0:
                return
            try:
                event = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if watch.bookmarks and time.monotonic() >= next_bookmark:
                    next_bookmark = time.monotonic() + bookmark_interval
                    yield _bookmark(watch.resource, store.version)
                continue
            if event.resource_version <= sent:
                continue  # already in the backlog
            if (line := _translate(event, watch)) is not None:
                yield line
    finally:
        store.unsubscribe(queue)
