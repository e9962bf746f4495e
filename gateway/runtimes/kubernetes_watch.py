"""Mirrors: the objects of one kind and label selector, kept by a list and then a watch.

A :class:`Mirror` lists once (taking the list's resourceVersion), then follows
the watch from there, so the runtime never polls the API for state. When the
server says the version is too old (410 Gone, as an HTTP answer or an ERROR
event in the stream) it lists again and replaces what it holds; when the API
does not answer it retries with a growing pause, and meanwhile says it is not
:attr:`Mirror.live`: the runtime then lists for real (and raises
``RuntimeUnavailable`` when that fails too), never answering from a stale view.

Writes of this gateway are put into the mirror at once (:meth:`Mirror.put`,
:meth:`Mirror.forget`), so a start sees its own objects before their events
arrive; a forgotten object's later events are ignored, by uid, until its
DELETED event. Every change wakes :class:`Changes` waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.errors import RuntimeFailure
from gateway.runtimes.kubernetes_api import Gone, KubeApi

log = logging.getLogger("convoy.gateway")

#: Seconds the server keeps one watch request open (it is then resumed from the last version).
WATCH_SECONDS = 300
_MAX_PAUSE = 10.0


class Changes:
    """Something changed in a mirror: waiters wake up and look again."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def gone(obj: dict[str, Any]) -> bool:
    """Being deleted counts as deleted (finalizers may keep it a while)."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class Mirror:
    """The objects of ``kind`` labelled ``labels``, by name."""

    def __init__(self, api: KubeApi, kind: str, labels: dict[str, str], changes: Changes) -> None:
        self.api, self.kind, self.labels = api, kind, labels
        self._changes = changes
        self.items: dict[str, dict[str, Any]] = {}
        self._forgotten: set[str] = set()  # uids deleted here, until their DELETED event
        self._live = False
        #: Why the last list or watch failed (None: it did not), for the runtime's messages.
        self.error: str | None = None
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        """Listed and following the watch now."""
        return self._live

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name=f"watch {self.kind}")

    async def synced(self, seconds: float) -> bool:
        """Whether the first list has arrived within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), seconds)
        return self._synced.is_set()

    async def _follow(self) -> None:
        pause = 0.2
        while True:
            try:
                version = await self.refresh()
                pause = 0.2
                async for event, obj in self.api.watch(self.kind, self.labels, version, WATCH_SECONDS):
                    self._apply(event, obj)
            except Gone:
                log.info("watch of %s: version too old, listing again", self.kind)
                continue
            except RuntimeFailure as error:
                self.error = str(error)
                log.warning("watch of %s failed (retrying in %.1fs): %s", self.kind, pause, error)
            self._live = False
            await asyncio.sleep(pause)
            pause = min(_MAX_PAUSE, pause * 2)

    async def refresh(self) -> str | None:
        """List for real and replace what the mirror holds; its resourceVersion."""
        self._live = False
        items, version = await self.api.list(self.kind, self.labels)
        self.items = {_name(obj): obj for obj in items if _uid(obj) not in self._forgotten}
        self._forgotten &= {_uid(obj) for obj in items}  # the others' DELETED events are past
        self._live, self.error = True, None
        self._synced.set()
        self._changes.notify()
        return version

    def _apply(self, event: str, obj: dict[str, Any]) -> None:
        name, uid = _name(obj), _uid(obj)
        if event == "DELETED":
            self._forgotten.discard(uid)
            if _uid(self.items.get(name, {})) == uid:
                del self.items[name]
        elif event in ("ADDED", "MODIFIED") and uid not in self._forgotten:
            self.items[name] = obj
        else:
            return  # BOOKMARK, or an object deleted here
        self._changes.notify()

    def put(self, obj: dict[str, Any]) -> None:
        """An object this gateway wrote (the API's answer)."""
        if _uid(obj) not in self._forgotten:
            self.items[_name(obj)] = obj
            self._changes.notify()

    def forget(self, name: str) -> None:
        """An object this gateway deleted: gone from now on."""
        found = self.items.pop(name, None)
        if found is not None:
            self._forgotten.add(_uid(found))
            self._changes.notify()

    def get(self, name: str | None) -> dict[str, Any] | None:
        found = self.items.get(name) if name else None
        return None if found is None or gone(found) else found

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
